"""JobRecords (daemon/job_records.py): the decoded jobs/runs/cancels follow the document, and
`take_changed` names exactly the jobs whose records changed, appeared or went."""

import os

from crdt_state.signing import seal_record
from daemon.job_records import JobRecords
from pack_manager.jobspec import JobSpec
from pack_manager.jobstate import RunReport
from pack_manager.requirements import WorkloadRequirements
from test_crdt_support import FakeNode

DIGEST = "ab" * 32


def put_job(node: FakeNode) -> str:
    spec = JobSpec(kind="wasm", submitter=node.node_id, nonce=os.urandom(16), module=DIGEST,
                   requirements=WorkloadRequirements.from_human(executor="wasm"))
    job_hex = spec.job_id().hex()
    node.doc.put_local("jobs", job_hex, seal_record(node.key, "job", {"spec": spec.pack(), "submitted_ms": 5}))
    return job_hex


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
    node.doc.put_local("jobs", "ee" * 32, seal_record(node.key, "job", {"spec": b"not a spec", "submitted_ms": 1}))
    assert records.take_changed() == set()
    records.refresh()
    assert [key for key, _ in bad] == ["ee" * 32]
    assert records.jobs() == {}
