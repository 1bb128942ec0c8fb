"""WorkloadRequirements: human input, msgpack round trip, and untrusted bytes from peers."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics_agent.units import GIB, MIB
from pack_manager.requirements import (
    DEFAULT_CPU_MILLICORES,
    DEFAULT_MEMORY_BYTES,
    RequirementsError,
    WorkloadRequirements,
)


def test_from_human_parses_every_field():
    req = WorkloadRequirements.from_human(
        cpu="1.5",
        memory="4GiB",
        disk="10GB",
        gpu="2",
        gpu_model="A100",
        gpu_memory="40GiB",
        executor="podman",
        labels=["zone=a", "disk=ssd"],
        preferred=["rack=r1"],
    )
    assert req.cpu_millicores == 1500
    assert req.memory_bytes == 4 * GIB
    assert req.disk_bytes == 10_000_000_000
    assert (req.gpu_count, req.gpu_model, req.gpu_memory_bytes) == (2, "A100", 40 * GIB)
    assert req.labels == {"zone": "a", "disk": "ssd"}
    assert req.preferred_labels == {"rack": "r1"}


def test_defaults():
    req = WorkloadRequirements.from_human()
    assert (req.cpu_millicores, req.memory_bytes, req.executor) == (
        DEFAULT_CPU_MILLICORES,
        DEFAULT_MEMORY_BYTES,
        "podman",
    )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"cpu": "-1"}, "cpu: .* negative"),
        ({"memory": "50%"}, "memory: .* percentage"),
        ({"memory": "2PiB"}, "more than 1 PiB"),
        ({"cpu": "200000"}, "more than 100,000 cores"),
        ({"disk": "3 furlongs"}, "unknown unit"),
        ({"gpu": "two"}, "gpu: .* not a whole number"),
        ({"gpu": "-1"}, "outside"),
        ({"gpu": "65"}, "outside"),
        ({"executor": "docker"}, "executor: 'docker' is not one of podman, wasm"),
        ({"labels": ["zone"]}, "not key=value"),
        ({"labels": ["=a"]}, "key ''"),
        ({"labels": ["zone=a", "zone=b"]}, "given twice"),
        ({"gpu_model": "T4"}, "no GPU count"),
        ({"executor": "wasm", "gpu": "1"}, "wasm executor cannot use GPUs"),
    ],
)
def test_bad_human_input(kwargs, fragment):
    with pytest.raises(RequirementsError, match=fragment):
        WorkloadRequirements.from_human(**kwargs)


requirements = st.builds(
    WorkloadRequirements,
    cpu_millicores=st.integers(0, 100_000_000),
    memory_bytes=st.integers(0, 1024**5),
    disk_bytes=st.integers(0, 1024**5),
    gpu_count=st.integers(1, 64),
    gpu_model=st.none() | st.text(min_size=1, max_size=20),
    gpu_memory_bytes=st.integers(0, 1024**5),
    executor=st.just("podman"),
    labels=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
        st.text(max_size=10).filter(lambda v: "\n" not in v and "\r" not in v and "\x00" not in v),
        max_size=3,
    ),
)


@given(requirements)
def test_msgpack_round_trip_is_lossless(req):
    assert WorkloadRequirements.unpack(req.pack()) == req


def _wire(**changes):
    record = WorkloadRequirements(memory_bytes=64 * MIB).to_wire()
    record.update(changes)
    return msgpack.packb(record)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\xc1garbage", "not valid msgpack"),
        (msgpack.packb([1, 2, 3]), "expected a map"),
        (_wire(cpu_millicores="lots"), "cpu_millicores: expected an integer"),
        (_wire(memory_bytes=-5), "outside"),
        (_wire(memory_bytes=2**63), "outside"),
        (_wire(gpu_count=True), "expected an integer"),
        (_wire(executor="shell"), "executor"),
        (_wire(labels={"k": 5}), "labels"),
        (_wire(labels={"bad key!": "v"}), "key"),
        (msgpack.packb({1: 2}), "map|msgpack"),
    ],
)
def test_untrusted_bytes_are_validated(data, fragment):
    with pytest.raises(RequirementsError, match=fragment):
        WorkloadRequirements.unpack(data)
