"""JobSpec: canonical encoding, stable ids, and refusal of every kind of bad wire input."""

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pack_manager.jobspec import JobInput, JobSpec, JobSpecError
from pack_manager.requirements import WorkloadRequirements

SUBMITTER = bytes(range(32))
NONCE = bytes(16)
DIGEST = "ab" * 32


def run_spec(**changes):
    fields = dict(
        kind="run",
        submitter=SUBMITTER,
        nonce=NONCE,
        image="localhost/formnet/busybox:latest",
        command=("echo", "hi"),
        inputs=(JobInput("in.txt", DIGEST),),
        env={"GREETING": "hello"},
    )
    fields.update(changes)
    return JobSpec(**fields)


def test_round_trip_keeps_every_field():
    spec = run_spec(timeout_ms=1500, network=True, replicas=3)
    assert JobSpec.unpack(spec.pack()) == spec
    assert spec.timeout_s == 1.5


def test_job_id_is_stable_and_depends_on_content():
    spec = run_spec()
    assert spec.job_id() == JobSpec.unpack(spec.pack()).job_id()
    assert len(spec.job_id()) == 32
    assert run_spec(nonce=b"\x01" * 16).job_id() != spec.job_id()
    assert run_spec(command=("echo", "bye")).job_id() != spec.job_id()


@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
        max_size=6,
    )
)
def test_encoding_is_canonical_whatever_the_env_order(env):
    forward = run_spec(env=dict(env))
    backward = run_spec(env=dict(reversed(list(env.items()))))
    assert forward.pack() == backward.pack()


def test_build_and_wasm_specs():
    build = JobSpec(kind="build", submitter=SUBMITTER, nonce=NONCE, context=DIGEST, keep_image=True)
    assert JobSpec.unpack(build.pack()) == build
    wasm = JobSpec(
        kind="wasm",
        submitter=SUBMITTER,
        nonce=NONCE,
        context=DIGEST,
        module="bin/app.wasm",
        requirements=WorkloadRequirements(executor="wasm"),
    )
    assert JobSpec.unpack(wasm.pack()).module == "bin/app.wasm"


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"kind": "launch"}, "kind"),
        ({"submitter": b"short"}, "submitter"),
        ({"nonce": b""}, "nonce"),
        ({"image": None}, "image"),
        ({"image": "Registry.example/UPPER"}, "image"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"OK": "a\x00b"}}, "env"),
        ({"env": {"OK": "\ud800"}}, "env"),
        ({"inputs": (JobInput("../etc/passwd", DIGEST),)}, "inputs"),
        ({"inputs": (JobInput("/abs", DIGEST),)}, "inputs"),
        ({"inputs": (JobInput("a", "xyz"),)}, "digest"),
        ({"inputs": (JobInput("a", DIGEST), JobInput("a", DIGEST))}, "twice"),
        ({"timeout_ms": 0}, "timeout"),
        ({"replicas": 0}, "replicas"),
        ({"command": ("a\x00",)}, "command"),
        ({"keep_image": True}, "keep_image"),
        ({"requirements": WorkloadRequirements(executor="wasm")}, "executor"),
        ({"module": DIGEST}, "module"),
    ],
)
def test_bad_specs_are_refused_with_the_field_named(changes, fragment):
    with pytest.raises(JobSpecError, match=fragment):
        run_spec(**changes)


def test_wasm_module_path_needs_a_context_and_no_escape():
    wasm = dict(
        kind="wasm", submitter=SUBMITTER, nonce=NONCE, requirements=WorkloadRequirements(executor="wasm")
    )
    with pytest.raises(JobSpecError, match="no context"):
        JobSpec(**wasm, module="app.wasm")
    with pytest.raises(JobSpecError, match="module"):
        JobSpec(**wasm, context=DIGEST, module="../app.wasm")
    with pytest.raises(JobSpecError, match="required"):
        JobSpec(**wasm)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda w: w.update(v=2), "version"),
        (lambda w: w.update(kind=7), "kind"),
        (lambda w: w.update(submitter="00" * 32), "submitter"),
        (lambda w: w.update(inputs=[["a"]]), "inputs"),
        (lambda w: w.update(inputs="a"), "inputs"),
        (lambda w: w.update(command=[1, 2]), "command"),
        (lambda w: w.update(timeout_ms=1.5), "timeout_ms"),
        (lambda w: w.update(network="yes"), "network"),
        (lambda w: w.update(requirements={"cpu_millicores": -1}), "requirements"),
        (lambda w: w.pop("keep_image"), "keep_image"),
    ],
)
def test_untrusted_wire_input_is_refused(mutate, fragment):
    wire = run_spec().to_wire()
    mutate(wire)
    with pytest.raises(JobSpecError, match=fragment):
        JobSpec.from_wire(wire)


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb({1: 2}), b"\x92\x01"])
def test_garbage_bytes_are_refused(data):
    with pytest.raises(JobSpecError):
        JobSpec.unpack(data)


def test_pack_is_made_once_and_a_replaced_spec_packs_its_own_fields():
    spec = JobSpec(
        kind="wasm",
        submitter=bytes(32),
        nonce=bytes(16),
        module="a" * 64,
        requirements=WorkloadRequirements.from_human(executor="wasm"),
    )
    assert spec.pack() is spec.pack()
    other = dataclasses.replace(spec, nonce=b"\x01" * 16)
    assert other.pack() != spec.pack() and JobSpec.unpack(other.pack()) == other
    assert other.job_id() != spec.job_id()
