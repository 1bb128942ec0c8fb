"""The simulation's invariant checks on hand-made end states: each one can fail, and says why."""

from pack_manager.jobstate import RunReport
from simulations.sim.invariants import (
    FinalFacts,
    JobFacts,
    PartitionSpan,
    check_all,
    duplicate_successes,
    lost_with_submitter,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64
NAMES = {A: "n0", B: "n1", C: "n2"}


def run(state, attempt=1, finished_ms=0):
    return RunReport(state, attempt, finished_ms=finished_ms, updated_ms=finished_ms)


def facts(jobs, *, up=(A, B, C), documents=None, partitions=(), orphans=()):
    return FinalFacts(
        jobs={job.job_hex: job for job in jobs},
        up=set(up),
        capable_survivor=bool(up),
        documents=documents if documents is not None else {n: ((("1", 1),), "same") for n in up},
        partitions=list(partitions),
        orphan_claims=list(orphans),
        names=NAMES,
    )


def job(name, submitter=A, present=True, **runs):
    return JobFacts(
        name * 64, submitter, 1_000, present=present, runs={NAMES_BY[n]: r for n, r in runs.items()}
    )


NAMES_BY = {"n0": A, "n1": B, "n2": C}


def broken(end_state):
    return {name: found for name, found in check_all(end_state).items() if found}


def test_a_clean_end_state_breaks_nothing():
    assert (
        broken(
            facts(
                [
                    job("1", n0=run("succeeded", finished_ms=5_000)),
                    job("2", n1=run("failed", finished_ms=5_000), n2=run("yielded")),
                ]
            )
        )
        == {}
    )


def test_an_unfinished_job_is_named_with_its_runs():
    found = broken(facts([job("1", n0=run("claimed"), n1=run("declined"))]))
    assert list(found) == ["every_job_final"]
    assert "job 111111111111 never reached a final state" in found["every_job_final"][0]
    assert "n0 claimed (attempt 1, up)" in found["every_job_final"][0]


def test_a_job_lost_with_its_dead_submitter_is_reported_but_not_a_violation():
    end = facts([job("1", submitter=C, present=False)], up=(A, B))
    assert broken(end) == {}
    assert lost_with_submitter(end) == ["1" * 64]
    alive_submitter = facts([job("1", submitter=A, present=False)])
    assert "which is up, but is not in the final document" in broken(alive_submitter)["every_job_final"][0]


def test_no_capable_survivor_means_nothing_could_finish():
    end = facts([job("1", n0=run("claimed"))], up=())
    assert "every_job_final" not in broken(end)


def test_two_successes_are_a_violation_unless_a_partition_separated_the_nodes():
    doubled = job("1", n0=run("succeeded", finished_ms=9_000), n1=run("succeeded", finished_ms=9_500))
    found = broken(facts([doubled]))
    assert list(found) == ["no_duplicate_success"]
    assert "succeeded on 2 nodes (n0, n1)" in found["no_duplicate_success"][0]
    split = PartitionSpan(2_000, 8_000, frozenset({A}))
    assert broken(facts([doubled], partitions=[split])) == {}
    assert duplicate_successes(facts([doubled], partitions=[split]))[1] == [
        "job 111111111111 succeeded on n0, n1 (a partition separated them)"
    ]
    # A partition that kept both on the same side, or came after the job, explains nothing.
    same_side = PartitionSpan(2_000, 8_000, frozenset({A, B}))
    later = PartitionSpan(20_000, 30_000, frozenset({A}))
    assert "no_duplicate_success" in broken(facts([doubled], partitions=[same_side, later]))


def test_documents_that_differ_are_a_violation():
    documents = {A: ((("1", 5),), "x"), B: ((("1", 5),), "x"), C: ((("1", 6),), "y")}
    found = broken(facts([], documents=documents))
    assert list(found) == ["documents_identical"]
    assert (
        "2 different documents among 3 live nodes" in found["documents_identical"][0]
        and "n2" in found["documents_identical"][0]
    )


def test_a_claim_left_on_a_dead_node_is_a_violation():
    found = broken(facts([job("1", n2=run("running"))], up=(A, B)))
    assert "is still running by n2, which is down" in found["no_dead_claims"][0]
    # Taken over and finished elsewhere: the dead node's stale record is history, not a hold.
    assert broken(facts([job("1", n2=run("running"), n0=run("succeeded", attempt=2))], up=(A, B))) == {}


def test_an_active_claim_nobody_runs_is_a_violation():
    found = broken(facts([job("1", n0=run("succeeded"))], orphans=[(B, "1" * 64)]))
    assert found == {"claims_backed": ["n1 holds an active claim on job 111111111111 but is not running it"]}
