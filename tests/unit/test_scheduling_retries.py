"""Retries and queue timeouts in the pure scheduler: a failed run moves to the next ranked
node that has not tried the job, after a doubling delay; a job no run started for fails."""

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from scheduling_views import NODES, actions, caps, cluster, job, spec, view

from pack_manager.jobstate import CANCELLED, FAILED, RUNNING, SUCCEEDED, TIMED_OUT, RunReport
from pack_manager.scheduling import (
    Claim,
    GiveUp,
    JobView,
    decide,
    job_status,
    order_nodes,
    retry_due_ms,
    settled,
)


def retried(retries=2, delay_ms=1000, **kwargs):
    return replace(spec(**kwargs), retries=retries, retry_delay_ms=delay_ms)


def failed(attempt, finished_ms=10_000, state=FAILED):
    return RunReport(
        state, attempt, reason="exit 1", started_ms=finished_ms - 1, finished_ms=finished_ms, exit_code=1
    )


def claims(j, nodes, now_ms):
    return {n: a for n, a in actions(j, nodes, now_ms=now_ms).items() if isinstance(a, Claim)}


def test_a_failed_run_is_retried_on_the_next_ranked_node_after_the_delay():
    s = retried()
    nodes = cluster()
    first, second, third = order_nodes(job(s), nodes)
    j = job(s, {first: failed(1)})
    assert claims(j, nodes, now_ms=10_500) == {}  # the delay (1 s) has not passed
    ((claimant, action),) = claims(j, nodes, now_ms=11_000).items()
    assert claimant == second and action.attempt == 2 and "retry 1 of 2" in action.reason
    status = job_status(j, nodes)
    assert status.state == "queued" and status.reason.startswith("retry 1 of 2 after attempt 1 failed on")
    # The second failure doubles the delay and moves on to the third node.
    j = job(s, {first: failed(1), second: failed(2, finished_ms=20_000)})
    assert retry_due_ms(j, {first, second}) == 22_000
    assert claims(j, nodes, now_ms=21_999) == {}
    assert {n: a.attempt for n, a in claims(j, nodes, now_ms=22_000).items()} == {third: 3}


def test_the_job_fails_when_retries_run_out_or_every_capable_node_tried_it():
    s = retried(retries=1)
    nodes = cluster()
    first, second, third = order_nodes(job(s), nodes)
    j = job(s, {first: failed(1), second: failed(2, finished_ms=20_000, state=TIMED_OUT)})
    assert claims(j, nodes, now_ms=10**9) == {}
    status = job_status(j, nodes)
    assert (status.state, status.node, status.attempt) == (TIMED_OUT, second, 2)  # the last attempt speaks
    assert [(a.attempt, a.node, a.state) for a in status.attempts] == [
        (1, first, FAILED),
        (2, second, TIMED_OUT),
    ]
    assert settled(s, j.runs)
    # Plenty of retries, but only two capable nodes, both tried.
    many = retried(retries=5)
    nodes[third] = view(caps(executors=("wasm",)))
    j = job(many, {first: failed(1), second: failed(2)})
    assert claims(j, nodes, now_ms=10**9) == {}
    assert job_status(j, nodes).state == FAILED


def test_a_success_after_a_retry_is_the_job_and_cancels_are_never_retried():
    s = retried()
    nodes = cluster()
    first, second, _ = order_nodes(job(s), nodes)
    ok = RunReport(SUCCEEDED, 2, started_ms=1, finished_ms=2, exit_code=0)
    status = job_status(job(s, {first: failed(1), second: ok}), nodes)
    assert (status.state, status.node, status.attempt) == (SUCCEEDED, second, 2)
    cancelled = job(s, {first: RunReport(CANCELLED, 1, started_ms=1, finished_ms=2)}, cancelled=True)
    assert claims(cancelled, nodes, now_ms=10**9) == {}
    assert job_status(cancelled, nodes).state == CANCELLED
    without = job(spec(), {first: failed(1)})  # no --retries: the first failure is final
    assert claims(without, nodes, now_ms=10**9) == {} and job_status(without, nodes).state == FAILED


@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**20))
def test_on_one_view_at_most_one_node_claims_a_retry(failures, retries, now_ms):
    s = retried(retries=retries, delay_ms=1000) if retries else spec()
    nodes = cluster()
    order = order_nodes(job(s), nodes)
    j = job(s, {n: failed(i + 1) for i, n in enumerate(order[:failures])})
    found = claims(j, nodes, now_ms)
    assert len(found) <= 1
    for node_id, action in found.items():
        assert node_id not in j.runs and action.attempt == failures + 1


def test_a_job_no_run_started_for_fails_at_its_queue_timeout_written_by_the_first_live_node():
    s = replace(spec(memory="64GiB"), queue_timeout_ms=5000)  # no node can ever run it
    nodes = cluster()
    j = JobView(s.job_id(), s, {}, submitted_ms=1000)
    assert all(a is None for a in actions(j, nodes, now_ms=5999).values())
    verdicts = actions(j, nodes, now_ms=6000)
    first = order_nodes(j, nodes)[0]
    assert isinstance(verdicts[first], GiveUp) and "queue timeout" in verdicts[first].reason
    assert all(verdicts[n] is None for n in NODES if n != first)
    gave_up = RunReport(FAILED, 1, reason=verdicts[first].reason, finished_ms=6000)
    status = job_status(JobView(s.job_id(), s, {first: gave_up}, submitted_ms=1000), nodes)
    assert status.state == FAILED and "queue timeout" in status.reason
    # A job that started in time is never cut short by its queue timeout.
    running = JobView(s.job_id(), s, {first: RunReport(RUNNING, 1, started_ms=2000)}, submitted_ms=1000)
    assert decide(running, nodes, first, nodes[first].capacity, now_ms=10**9) is None
