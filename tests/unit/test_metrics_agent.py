"""metrics_agent: real psutil figures, NVML through a fake module, reservations, wire round trip."""

import logging

import msgpack
import pytest
from fake_nvml import FakeGpu, FakeNvml
from hypothesis import given
from hypothesis import strategies as st

from metrics_agent.capabilities import GpuInfo, NodeCapabilities
from metrics_agent.capacity import GpuUsage, NodeCapacity, Reservation, apply_reservations
from metrics_agent.collect import collect_capabilities, sample_capacity
from metrics_agent.executors_probe import podman_answers, probe_executors, unix_socket_path
from metrics_agent.gpu import GpuProbe
from metrics_agent.units import GIB
from metrics_agent.wire import WireError


def two_gpus():
    return FakeNvml(
        [
            FakeGpu("NVIDIA A100-SXM4-40GB", 40 * GIB, 38 * GIB, util=7, uuid="GPU-a", cc=(8, 0)),
            FakeGpu("NVIDIA Tesla T4", 16 * GIB, 15 * GIB, util=55, uuid="GPU-b", cc=(7, 5)),
        ]
    )


def test_real_host_figures_are_integers_and_sane(tmp_path):
    caps = collect_capabilities(tmp_path, {"zone": "a"}, ("wasm",), nvml=FakeNvml([]))
    assert caps.logical_cores >= 1 and caps.cpu_millicores == caps.logical_cores * 1000
    assert caps.memory_bytes > 0 and caps.disk_bytes > 0 and caps.arch and caps.kernel
    assert caps.labels == {"zone": "a"} and caps.executors == ("wasm",) and caps.gpus == ()
    cap = sample_capacity(tmp_path, caps, [], nvml=FakeNvml([]))
    for value in (
        cap.cpu_millicores_idle,
        cap.memory_available_bytes,
        cap.disk_free_bytes,
        *cap.load_avg_milli,
    ):
        assert isinstance(value, int) and value >= 0
    assert 0 <= cap.cpu_millicores_idle <= caps.cpu_millicores
    assert 0 < cap.memory_available_bytes <= caps.memory_bytes
    assert cap.allocatable_cpu_millicores == caps.cpu_millicores


def test_nvml_inventory_of_several_gpus():
    probe = GpuProbe(two_gpus())
    gpus = probe.inventory()
    assert [g.model for g in gpus] == ["NVIDIA A100-SXM4-40GB", "NVIDIA Tesla T4"]
    assert gpus[0] == GpuInfo(0, "nvidia", "NVIDIA A100-SXM4-40GB", 40 * GIB, "GPU-a", "550.54.15", "8.0")
    assert gpus[1].compute_capability == "7.5"
    assert probe.usage() == (GpuUsage(0, 38 * GIB, 7), GpuUsage(1, 15 * GIB, 55))


def test_no_driver_means_zero_gpus_and_one_debug_line(caplog):
    caplog.set_level(logging.DEBUG, logger="formnet.metrics.gpu")
    probe = GpuProbe(FakeNvml([], init_error=True))
    assert probe.inventory() == () and probe.usage() == ()
    records = [r for r in caplog.records if r.name == "formnet.metrics.gpu"]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG
    assert "Library Not Found" in records[0].getMessage()


def test_nvml_error_mid_sampling_holds_that_gpu_back_then_recovers(caplog, tmp_path):
    nvml = two_gpus()
    caps = collect_capabilities(tmp_path, {}, (), nvml=nvml)
    assert len(caps.gpus) == 2
    nvml.gpus[1].broken.add("utilization")
    with caplog.at_level(logging.WARNING, logger="formnet.metrics.gpu"):
        first = sample_capacity(tmp_path, caps, [], nvml=nvml)
        second = sample_capacity(tmp_path, caps, [], nvml=nvml)
    assert [g.index for g in first.gpus] == [0] and first.allocatable_gpu_indices == (0,)
    assert [g.index for g in second.gpus] == [0]
    warnings = [r for r in caplog.records if "GPU 1 not sampled" in r.getMessage()]
    assert len(warnings) == 1  # logged once until it recovers, not every tick
    nvml.gpus[1].broken.clear()
    third = sample_capacity(tmp_path, caps, [], nvml=nvml)
    assert third.allocatable_gpu_indices == (0, 1)


def test_a_gpu_that_fails_inventory_is_left_out():
    nvml = two_gpus()
    nvml.gpus[0].broken.add("name")
    assert [g.uuid for g in GpuProbe(nvml).inventory()] == ["GPU-b"]


def caps_of(**overrides):
    values = dict(
        cpu_model="x",
        logical_cores=4,
        physical_cores=2,
        cpu_millicores=4000,
        memory_bytes=8 * GIB,
        disk_bytes=100 * GIB,
        arch="x86_64",
        os="Debian",
        kernel="6.1",
        gpus=(GpuInfo(0, "nvidia", "T4", 16 * GIB, "GPU-0", "550", "7.5"),),
        executors=("podman", "wasm"),
        labels={"zone": "a"},
    )
    values.update(overrides)
    return NodeCapabilities(**values)


def test_reservations_are_subtracted():
    caps = caps_of()
    observed = NodeCapacity(
        cpu_millicores_idle=3900,
        memory_available_bytes=7 * GIB,
        disk_free_bytes=90 * GIB,
        gpus=(GpuUsage(0, 16 * GIB, 0),),
    )
    held = [Reservation(1500, 2 * GIB, 10 * GIB, (0,)), Reservation(500, 1 * GIB)]
    cap = apply_reservations(caps, observed, held)
    assert cap.running_jobs == 2
    assert (cap.reserved_cpu_millicores, cap.reserved_memory_bytes, cap.reserved_disk_bytes) == (
        2000,
        3 * GIB,
        10 * GIB,
    )
    assert cap.allocatable_cpu_millicores == 2000
    # Unreserved memory is 5 GiB; the host says 7 GiB is available: the smaller wins.
    assert cap.allocatable_memory_bytes == 5 * GIB
    assert cap.allocatable_disk_bytes == 90 * GIB
    assert cap.reserved_gpu_indices == (0,) and cap.allocatable_gpu_indices == ()


def test_memory_actually_used_by_others_limits_allocatable():
    caps = caps_of()
    observed = NodeCapacity(cpu_millicores_idle=100, memory_available_bytes=1 * GIB, disk_free_bytes=GIB)
    cap = apply_reservations(caps, observed, [])
    assert cap.allocatable_memory_bytes == 1 * GIB
    assert cap.allocatable_cpu_millicores == 4000  # CPU is compressible: total less reservations


texts = st.text(max_size=30)
gpu_infos = st.builds(
    GpuInfo,
    index=st.integers(0, 1023),
    vendor=texts,
    model=texts,
    memory_bytes=st.integers(0, 2**62),
    uuid=texts,
    driver_version=texts,
    compute_capability=st.text(max_size=8),
)
capabilities = st.builds(
    NodeCapabilities,
    cpu_model=texts,
    logical_cores=st.integers(0, 10**6),
    physical_cores=st.integers(0, 10**6),
    cpu_millicores=st.integers(0, 2**62),
    memory_bytes=st.integers(0, 2**62),
    disk_bytes=st.integers(0, 2**62),
    arch=texts,
    os=texts,
    kernel=texts,
    gpus=st.lists(gpu_infos, max_size=4).map(tuple),
    executors=st.lists(st.sampled_from(["podman", "wasm"]), unique=True).map(tuple),
    labels=st.dictionaries(st.text(max_size=10), texts, max_size=4),
)
small_ints = st.integers(0, 2**62)
capacities = st.builds(
    NodeCapacity,
    cpu_millicores_idle=small_ints,
    memory_available_bytes=small_ints,
    disk_free_bytes=small_ints,
    gpus=st.lists(st.builds(GpuUsage, st.integers(0, 1023), small_ints, st.integers(0, 100)), max_size=4).map(
        tuple
    ),
    load_avg_milli=st.tuples(small_ints, small_ints, small_ints).filter(lambda t: max(t) < 2**40),
    running_jobs=st.integers(0, 1000),
    reserved_cpu_millicores=small_ints,
    reserved_memory_bytes=small_ints,
    reserved_disk_bytes=small_ints,
    reserved_gpu_indices=st.lists(st.integers(0, 1023), max_size=4).map(tuple),
    allocatable_cpu_millicores=small_ints,
    allocatable_memory_bytes=small_ints,
    allocatable_disk_bytes=small_ints,
    allocatable_gpu_indices=st.lists(st.integers(0, 1023), max_size=4).map(tuple),
)


@given(capabilities)
def test_capabilities_msgpack_round_trip_is_lossless(caps):
    wire = msgpack.unpackb(msgpack.packb(caps.to_wire()), raw=False)
    assert NodeCapabilities.from_wire(wire) == caps


@given(capacities)
def test_capacity_msgpack_round_trip_is_lossless(cap):
    wire = msgpack.unpackb(msgpack.packb(cap.to_wire()), raw=False)
    assert NodeCapacity.from_wire(wire) == cap


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda w: w.update(memory_bytes=-1), "memory_bytes"),
        (lambda w: w.update(cpu_millicores=1.5), "cpu_millicores: expected an integer"),
        (lambda w: w.update(executors="podman"), "executors"),
        (lambda w: w.update(labels={"a": 1}), "labels"),
        (lambda w: w.update(gpus=[{"index": 0}]), "vendor"),
        (lambda w: w.pop("arch"), "arch"),
    ],
)
def test_capabilities_from_untrusted_wire(mutate, fragment):
    wire = caps_of().to_wire()
    mutate(wire)
    with pytest.raises(WireError, match=fragment):
        NodeCapabilities.from_wire(wire)


def test_capacity_rejects_bad_load_and_utilisation():
    wire = NodeCapacity(1, 1, 1, gpus=(GpuUsage(0, 1, 5),)).to_wire()
    wire["gpus"][0]["utilization_pct"] = 101
    with pytest.raises(WireError, match="utilization_pct"):
        NodeCapacity.from_wire(wire)
    wire = NodeCapacity(1, 1, 1).to_wire()
    wire["load_avg_milli"] = [1, 2]
    with pytest.raises(WireError, match="load_avg_milli"):
        NodeCapacity.from_wire(wire)


def test_executor_probe_without_podman(tmp_path):
    assert unix_socket_path("unix:///run/podman/podman.sock") == "/run/podman/podman.sock"
    assert unix_socket_path("tcp://127.0.0.1:8080") is None
    assert not podman_answers(f"unix://{tmp_path}/missing.sock")
    assert probe_executors(f"unix://{tmp_path}/missing.sock") == ("wasm",)
    assert probe_executors(None) == ("wasm",)


async def test_executor_probe_sees_an_answering_api_socket(tmp_path):
    import trio

    path = tmp_path / "api.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(str(path))
    listener.listen()

    async def answer_once():
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(1024)
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_once)
        found = await trio.to_thread.run_sync(probe_executors, f"unix://{path}")
    listener.close()
    assert found == ("podman", "wasm")
