"""The retention rule (pack_manager/retention.py): when a finished job may leave the document,
who deletes it, and why receivers always accept what an honest deleter deletes."""

from hypothesis import given
from hypothesis import strategies as st

from pack_manager.placement import rank
from pack_manager.retention import (
    RetentionRule,
    accepts_remote_delete,
    deletes_now,
    due_ms,
    job_retirable,
    stamp_ms,
)

RULE = RetentionRule(retention_ms=60_000, grace_ms=30_000)
JOB = bytes.fromhex("ab" * 32)
NODES = [bytes([i]) * 32 for i in range(1, 5)]


def test_an_entry_is_aged_from_the_newest_time_it_carries():
    assert stamp_ms("runs", {"updated_ms": 5, "started_ms": 9, "finished_ms": 7}) == 9
    assert stamp_ms("jobs", {"submitted_ms": 3, "finished_ms": 99}) == 3  # a job record has no finish time
    assert stamp_ms("cancels", {"requested_ms": 4}) == 4
    assert stamp_ms("runs", {"updated_ms": True, "finished_ms": "late"}) == 0  # nothing usable
    assert stamp_ms("runs", "not a record") == 0


def test_only_final_jobs_nobody_alive_still_runs_are_retired_and_only_after_retention():
    stamps = [1_000, 5_000]
    due = due_ms(stamps, RULE)
    assert due == 65_000
    assert job_retirable("succeeded", 0, stamps, due, RULE)
    assert not job_retirable("succeeded", 0, stamps, due - 1, RULE)
    for state in ("queued", "claimed", "running", "unschedulable"):
        assert not job_retirable(state, 0, stamps, due * 100, RULE)
    assert not job_retirable("failed", 1, stamps, due * 100, RULE)  # a live replica still runs it


def test_the_first_live_node_deletes_at_retention_and_any_node_after_the_grace():
    order = rank(JOB, NODES)
    due = 100_000
    for node in NODES:
        assert not deletes_now(JOB, NODES, node, due - 1, due, RULE)
        assert deletes_now(JOB, NODES, node, due, due, RULE) == (node == order[0])
        assert deletes_now(JOB, NODES, node, due + RULE.grace_ms, due, RULE)
    # The first-ranked node is dead: the next live one takes its place at once.
    live = [n for n in NODES if n != order[0]]
    assert deletes_now(JOB, live, order[1], due, due, RULE)


def test_receivers_never_take_deletes_of_node_records():
    assert not accepts_remote_delete("nodes", {"updated_ms": 0}, 10**15, RULE)


@given(
    stamps=st.lists(st.integers(0, 10**12), min_size=1, max_size=6),
    waited=st.integers(0, 10**9),
    skew=st.integers(-60_000, 60_000),
    later=st.integers(0, 10**9),
)
def test_receivers_accept_whatever_an_honest_deleter_deletes(stamps, waited, skew, later):
    """The deleter retires once retention has passed since the newest stamp by its clock;
    every receiver whose clock is within the transport's +-60 s accepts each entry on its own
    stamp, then and at any later time (monotone), so no replica is left refusing a diff."""
    deleter_now = due_ms(stamps, RULE) + waited
    for stamp in stamps:
        receiver_now = deleter_now + skew
        assert accepts_remote_delete("runs", {"finished_ms": stamp}, receiver_now, RULE)
        assert accepts_remote_delete("runs", {"finished_ms": stamp}, receiver_now + later, RULE)


@given(stamp=st.integers(0, 10**12), early=st.integers(RULE.skew_ms + 1, 10**9))
def test_receivers_refuse_deletes_of_entries_far_younger_than_retention(stamp, early):
    now = stamp + RULE.retention_ms - early
    assert not accepts_remote_delete("jobs", {"submitted_ms": stamp}, now, RULE)
