"""JobRecords (daemon/jobs/records.py): the decoded jobs/runs/cancels follow the document, and
`take_changed` names exactly the jobs whose records changed, appeared or went."""

import os

import pytest
from crdt_nodes import FakeNode

from crdt_state.signing import seal_record
from daemon.jobs.records import JobRecords
from pack_manager.jobspec import JobSpec, JobSpecError
from pack_manager.jobstate import OutputRef, RunReport
from pack_manager.requirements import WorkloadRequirements

DIGEST = "ab" * 32


def put_job(node: FakeNode, submitted_ms: int = 5) -> str:
    return put_spec(node, submitted_ms)[0]


def put_spec(node: FakeNode, submitted_ms: int) -> tuple[str, JobSpec]:
    """A new WASM job written into the node's document: its id and its spec."""
    spec = JobSpec(
        kind="wasm",
        submitter=node.node_id,
        nonce=os.urandom(16),
        module=DIGEST,
        requirements=WorkloadRequirements.from_human(executor="wasm"),
    )
    job_hex = spec.job_id().hex()
    node.doc.put_local(
        "jobs", job_hex, seal_record(node.key, "job", {"spec": spec.pack(), "submitted_ms": submitted_ms})
    )
    return job_hex, spec


def put_run(node: FakeNode, job_hex: str, state: str) -> None:
    body = RunReport(state, 1).to_wire()
    node.doc.put_local("runs", f"{job_hex}:{node.hex}", seal_record(node.key, "run", body))


def setup():
    node = FakeNode.create()
    node.heartbeat()
    return node, JobRecords(node.doc)


def test_new_and_changed_records_are_reported_once():
    node, records = setup()
    first, second = put_job(node), put_job(node)
    assert records.take_changed() == {first, second}
    assert records.take_changed() == set()  # nothing new since
    put_run(node, first, "claimed")
    assert records.take_changed() == {first}
    job = records.job(first)
    assert job.runs[node.node_id].state == "claimed" and job.submitted_ms == 5 and not job.cancelled
    node.doc.put_local("cancels", second, seal_record(node.key, "cancel", {"reason": "x", "requested_ms": 1}))
    assert records.take_changed() == {second}
    assert records.job(second).cancelled


def test_a_reader_refreshing_in_between_does_not_hide_changes_from_the_loop():
    node, records = setup()
    job_hex = put_job(node)
    assert set(records.jobs()) == {job_hex}  # the control API reads (and refreshes)
    assert records.take_changed() == {job_hex}  # the loop still learns of it


def test_a_run_that_arrives_before_its_job_is_joined_when_the_job_arrives():
    submitter, _ = setup()
    runner, _ = setup()
    reader, records = setup()
    for writer in (submitter, runner):  # their node records first
        for update in writer.doc.drain_local_updates():
            assert reader.doc.apply_remote(update).accepted
            assert (runner if writer is submitter else submitter).doc.apply_remote(update).accepted
    job_hex = put_job(submitter)
    job_updates = submitter.doc.drain_local_updates()
    put_run(runner, job_hex, "running")
    for update in runner.doc.drain_local_updates():
        assert reader.doc.apply_remote(update).accepted
    assert records.take_changed() == {job_hex}
    assert records.job(job_hex) is None  # no job record yet: nothing to decide
    for update in job_updates:
        assert reader.doc.apply_remote(update).accepted
    assert records.take_changed() == {job_hex}
    assert records.job(job_hex).runs[runner.node_id].state == "running"


def test_a_job_record_that_does_not_decode_is_reported_to_the_callback_once():
    node = FakeNode.create()
    node.heartbeat()
    bad = []
    records = JobRecords(node.doc, lambda key, reason: bad.append((key, reason)))
    node.doc.put_local(
        "jobs", "ee" * 32, seal_record(node.key, "job", {"spec": b"not a spec", "submitted_ms": 1})
    )
    assert records.take_changed() == set()
    records.refresh()
    assert [key for key, _ in bad] == ["ee" * 32]
    assert records.jobs() == {}


def test_the_document_says_who_holds_a_jobs_blobs():
    submitter, records = setup()
    runner = FakeNode.create()
    runner.heartbeat()
    for update in runner.doc.drain_local_updates():
        assert submitter.doc.apply_remote(update).accepted
    job_hex = put_job(submitter)
    records.refresh()
    assert records.holders(DIGEST) == {submitter.node_id}  # it stored the blobs to submit
    # A claim that is still fetching holds nothing yet; once running it holds the inputs.
    claimed = seal_record(runner.key, "run", RunReport("claimed", 1).to_wire())
    running = seal_record(runner.key, "run", RunReport("running", 1, started_ms=7).to_wire())
    out = "cd" * 32
    done = seal_record(
        runner.key,
        "run",
        RunReport("succeeded", 1, started_ms=7, finished_ms=9, outputs=(OutputRef("o", out, 3),)).to_wire(),
    )
    key = f"{job_hex}:{runner.hex}"
    for envelope, holders_of_input, holders_of_output in (
        (claimed, {submitter.node_id}, set()),
        (running, {submitter.node_id, runner.node_id}, set()),
        (done, {submitter.node_id, runner.node_id}, {runner.node_id}),
    ):
        runner.doc.put_local("runs", key, envelope)
        for update in runner.doc.drain_local_updates():
            assert submitter.doc.apply_remote(update).accepted
        records.refresh()
        assert records.holders(DIGEST) == holders_of_input
        assert records.holders(out) == holders_of_output
    spec = records.job(job_hex).spec
    assert records.holdings(spec) == {submitter.node_id: 1, runner.node_id: 1}


def test_holdings_are_filled_only_for_jobs_that_ask_and_follow_the_records():
    node, records = setup()
    spec = JobSpec(
        kind="wasm",
        submitter=node.node_id,
        nonce=os.urandom(16),
        module=DIGEST,
        requirements=WorkloadRequirements.from_human(executor="wasm"),
        prefer_local_inputs=True,
    )
    job_hex = spec.job_id().hex()
    node.doc.put_local(
        "jobs", job_hex, seal_record(node.key, "job", {"spec": spec.pack(), "submitted_ms": 5})
    )
    plain = put_job(node)
    records.refresh()
    assert records.job(job_hex).view().holdings == {node.node_id: 1}
    assert records.job(plain).view().holdings == {}


def test_prefer_local_inputs_is_on_the_wire_only_when_set():
    node = FakeNode.create()
    base = dict(
        kind="wasm",
        submitter=node.node_id,
        nonce=b"n" * 16,
        module=DIGEST,
        requirements=WorkloadRequirements.from_human(executor="wasm"),
    )
    plain, preferring = JobSpec(**base), JobSpec(**base, prefer_local_inputs=True)
    assert "prefer_local_inputs" not in plain.to_wire()  # older specs keep their bytes and ids
    assert JobSpec.unpack(preferring.pack()) == preferring and preferring.job_id() != plain.job_id()
    with pytest.raises(JobSpecError):
        JobSpec.from_wire(dict(preferring.to_wire(), prefer_local_inputs="yes"))


def test_after_the_first_walk_only_the_changed_keys_are_read(monkeypatch):
    node, records = setup()
    kept, retired = put_job(node), put_job(node)
    put_run(node, retired, "succeeded")
    assert records.take_changed() == {kept, retired}
    monkeypatch.setattr(node.doc, "items", lambda map_name: pytest.fail("walked the whole map"))
    put_run(node, kept, "running")
    assert records.take_changed() == {kept}
    assert node.doc.delete_local([("jobs", retired), ("runs", f"{retired}:{node.hex}")]) == 2
    assert records.take_changed() == {retired}
    assert records.job(retired) is None and retired not in records.runs
    assert records.take_changed() == set()


def test_a_spec_this_node_wrote_is_taken_as_is_and_other_bytes_are_decoded():
    node, records = setup()
    job_hex, spec = put_spec(node, 7)
    records.wrote(job_hex, spec)
    assert records.take_changed() == {job_hex}
    assert records.job(job_hex).spec is spec and records.job(job_hex).submitted_ms == 7
    # A hint whose bytes are not the record's is not trusted: the record itself is decoded.
    other = JobSpec(
        kind="wasm",
        submitter=node.node_id,
        nonce=os.urandom(16),
        module=DIGEST,
        requirements=WorkloadRequirements.from_human(executor="wasm"),
    )
    node.doc.put_local(
        "jobs", other.job_id().hex(), seal_record(node.key, "job", {"spec": other.pack(), "submitted_ms": 8})
    )
    records.wrote(other.job_id().hex(), spec)  # wrong spec for that key
    assert records.take_changed() == {other.job_id().hex()}
    taken = records.job(other.job_id().hex())
    assert taken.spec == other and taken.spec is not spec
