"""A replicated job is final only when every replica is (what `form submit --wait` waits for)."""

from scheduling_views import caps, cluster, job, spec, view

from pack_manager.jobstate import RUNNING, SUCCEEDED, RunReport
from pack_manager.scheduling import job_status, order_nodes

D1, D2 = "ab" * 32, "cd" * 32


def done(digest=D1):
    return RunReport(SUCCEEDED, 1, started_ms=1, finished_ms=2, exit_code=0, result_digest=digest)


def test_one_finished_replica_of_two_is_not_the_end_of_the_job():
    s = spec(replicas=2)
    nodes = cluster()
    a, b, _ = order_nodes(job(s), nodes)
    assert job_status(job(s, {a: done()}), nodes).state == "queued"  # b has not claimed yet
    assert job_status(job(s, {a: done(), b: RunReport(RUNNING, 1, started_ms=1)}), nodes).state == "running"
    status = job_status(job(s, {a: done(), b: done()}), nodes)
    assert (status.state, status.verified, status.verify_reason) == ("succeeded", True, "")


def test_replicas_that_differ_are_named_with_their_digests():
    s = spec(replicas=2)
    nodes = cluster()
    a, b, _ = order_nodes(job(s), nodes)
    status = job_status(job(s, {a: done(D1), b: done(D2)}), nodes)
    assert status.state == "succeeded" and not status.verified
    assert (
        status.verify_reason
        == f"replicas differ: node {a.hex()[:12]} digest {D1[:12]}, node {b.hex()[:12]} digest {D2[:12]}"
    )


def test_with_no_other_capable_node_the_one_replica_is_final_and_says_so():
    s = spec(replicas=2)
    nodes = cluster()
    a, b, c = order_nodes(job(s), nodes)
    nodes[b] = view(caps(executors=("wasm",)))
    nodes[c] = view(status="dead")
    status = job_status(job(s, {a: done()}), nodes)
    assert (status.state, status.verified) == ("succeeded", False)
    assert status.verify_reason == "only 1 of 2 replicas ran (no other capable node is live)"
