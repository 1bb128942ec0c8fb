"""The pure failure detector: transitions, timeouts scaling with cluster size, rejoin, leave."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.cluster.membership import Membership, MembershipConfig

SELF = b"\x00" * 32
A = b"\xaa" * 32
B = b"\xbb" * 32


def kinds(events):
    return [(e.kind, e.node_id) for e in events]


def test_timeout_formulas_scale_with_log10_of_cluster_size():
    config = MembershipConfig()
    assert config.suspicion_timeout(1) == pytest.approx(4.0)
    assert config.suspicion_timeout(10) == pytest.approx(4.0)
    assert config.suspicion_timeout(100) == pytest.approx(8.0)
    assert config.suspicion_timeout(1000) == pytest.approx(12.0)
    assert MembershipConfig(probe_interval=0.5).suspicion_timeout(1000) == pytest.approx(6.0)


def test_record_refresh_and_the_silence_backstop_follow_the_cluster_wide_write_rate():
    config = MembershipConfig()  # refresh_rate 3: three record refreshes per second, cluster-wide
    assert config.refresh_interval(1) == pytest.approx(1.0)
    assert config.refresh_interval(3) == pytest.approx(1.0)
    assert config.refresh_interval(10) == pytest.approx(10 / 3)
    assert config.refresh_interval(1000) == pytest.approx(1000 / 3)
    # Backstop: suspect_mult refreshes missed, never less than the old log10 propagation bound.
    assert config.suspect_timeout(1) == pytest.approx(4.0)
    assert config.suspect_timeout(3) == pytest.approx(4.0)
    assert config.suspect_timeout(10) == pytest.approx(40 / 3)
    assert config.suspect_timeout(1000) == pytest.approx(4000 / 3)
    assert config.dead_timeout(3) == pytest.approx(12.0)
    assert config.dead_timeout(1000) == pytest.approx(4000.0)
    fast = MembershipConfig(heartbeat_interval=0.25)
    assert fast.suspect_timeout(3) == pytest.approx(1.0)
    assert MembershipConfig(refresh_rate=100).suspect_timeout(100) == pytest.approx(8.0)


@pytest.mark.parametrize(
    "bad",
    [
        dict(heartbeat_interval=0),
        dict(suspect_mult=-1),
        dict(dead_mult=1.0),
        dict(probe_interval=0),
        dict(refresh_rate=0),
    ],
)
def test_config_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        MembershipConfig(**bad)


def test_first_sight_joins_then_silence_means_suspect_then_dead():
    m = Membership(SELF)
    m.observe(A, 1, 5, "alive", now=100.0)
    assert kinds(m.tick(100.0, cluster_size=2)) == [("joined", A)]
    assert m.status(A, 103.9) == "alive"
    assert m.tick(103.9) == []
    assert m.status(A, 104.0) == "suspect"
    events = m.tick(104.0)
    assert kinds(events) == [("suspect", A)]
    assert events[0].previous == "alive" and events[0].at == 104.0
    assert m.tick(111.0) == []
    assert kinds(m.tick(112.0)) == [("dead", A)]
    assert m.status(A, 112.0) == "dead"
    assert m.alive_ids(112.0) == [SELF]


def test_advancing_heartbeat_keeps_a_node_alive_indefinitely():
    m = Membership(SELF)
    for beat in range(200):
        m.observe(A, 1, beat, "alive", now=float(beat))
        events = m.tick(float(beat), cluster_size=2)
        assert all(e.kind == "joined" for e in events)
    assert m.status(A, 199.5) == "alive"
    assert m.since_heartbeat(A, 199.5) == pytest.approx(0.5)


def test_a_repeated_or_older_record_is_not_an_advance():
    m = Membership(SELF)
    m.observe(A, 2, 10, "alive", now=0.0)
    m.tick(0.0, cluster_size=2)
    m.observe(A, 2, 10, "alive", now=3.0)  # same record gossiped again
    m.observe(A, 1, 99, "alive", now=3.5)  # older incarnation, bigger counter
    assert m.status(A, 4.0) == "suspect"
    assert m.since_heartbeat(A, 4.0) == pytest.approx(4.0)


def test_timeouts_are_longer_in_a_bigger_cluster():
    small, big = Membership(SELF), Membership(SELF)
    for m, size in ((small, 3), (big, 1000)):
        m.observe(A, 1, 1, "alive", now=0.0)
        m.tick(0.0, cluster_size=size)
    assert small.status(A, 5.0) == "suspect"
    assert big.status(A, 5.0) == "alive"
    assert big.status(A, 1333.0) == "alive"
    assert big.status(A, 1334.0) == "suspect"
    assert small.status(A, 13.0) == "dead"
    assert big.status(A, 3999.0) == "suspect"
    assert big.status(A, 4000.0) == "dead"


def test_suspect_node_that_beats_again_is_alive_again():
    m = Membership(SELF)
    m.observe(A, 1, 1, "alive", now=0.0)
    m.tick(0.0, cluster_size=3)
    assert kinds(m.tick(5.0)) == [("suspect", A)]
    m.observe(A, 1, 2, "alive", now=6.0)
    events = m.tick(6.0)
    assert kinds(events) == [("alive", A)]
    assert events[0].previous == "suspect"
    assert m.status(A, 6.0) == "alive"


def test_dead_node_that_comes_back_with_a_new_incarnation_rejoins():
    m = Membership(SELF)
    m.observe(A, 1, 50, "alive", now=0.0)
    m.tick(0.0, cluster_size=3)
    m.tick(5.0)
    assert kinds(m.tick(20.0)) == [("dead", A)]
    m.observe(A, 2, 0, "alive", now=30.0)  # restarted: heartbeat counter starts over
    events = m.tick(30.0)
    assert kinds(events) == [("rejoined", A)]
    assert events[0].previous == "dead"
    assert m.status(A, 30.0) == "alive"


def test_long_gap_between_ticks_still_reports_suspect_before_dead():
    m = Membership(SELF)
    m.observe(A, 1, 1, "alive", now=0.0)
    m.tick(0.0, cluster_size=2)
    assert kinds(m.tick(1000.0)) == [("suspect", A), ("dead", A)]


def test_graceful_leave_is_immediate_and_a_restart_rejoins():
    m = Membership(SELF)
    m.observe(A, 1, 7, "alive", now=0.0)
    m.tick(0.0, cluster_size=2)
    m.observe(A, 1, 8, "left", now=1.0)
    assert m.status(A, 1.0) == "left"
    assert kinds(m.tick(1.0)) == [("left", A)]
    assert m.tick(500.0) == []  # a left node never turns suspect or dead
    assert m.status(A, 500.0) == "left"
    m.observe(A, 2, 0, "alive", now=600.0)
    assert kinds(m.tick(600.0)) == [("rejoined", A)]


def test_stale_left_record_cannot_hide_a_newer_alive_one():
    m = Membership(SELF)
    m.observe(A, 3, 1, "alive", now=0.0)
    m.observe(A, 2, 9, "left", now=0.5)  # the previous incarnation's goodbye, arriving late
    assert m.status(A, 0.5) == "alive"


def test_first_sight_of_a_left_node_is_history_not_an_event():
    m = Membership(SELF)
    m.observe(A, 1, 1, "left", now=0.0)
    assert m.tick(0.0, cluster_size=2) == []
    assert m.status(A, 100.0) == "left"


def test_self_is_always_alive_and_never_reported():
    m = Membership(SELF)
    m.observe(SELF, 9, 9, "alive", now=0.0)
    assert m.tick(100.0, cluster_size=2) == []
    assert m.status(SELF, 100.0) == "alive"
    assert m.status(B, 100.0) is None
    assert m.since_heartbeat(B, 1.0) is None


def test_bad_record_status_is_refused_and_changes_nothing():
    m = Membership(SELF)
    with pytest.raises(ValueError):
        m.observe(A, 1, 1, "zombie", now=0.0)
    assert m.status(A, 0.0) is None
    assert m.tick(0.0) == []


def test_forget_removes_a_node():
    m = Membership(SELF)
    m.observe(A, 1, 1, "alive", now=0.0)
    m.forget(A)
    assert m.status(A, 0.0) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.integers(0, 3), st.integers(0, 5), st.sampled_from(["alive", "left"])),
        max_size=40,
    )
)
def test_event_stream_follows_the_state_machine(observations):
    """Whatever arrives, events chain: each event's `previous` is the last reported state."""
    m = Membership(SELF)
    now = 0.0
    reported: dict[bytes, str | None] = {}
    allowed = {
        "joined": {None},
        "suspect": {"alive"},
        "dead": {"suspect"},
        "alive": {"suspect"},
        "rejoined": {"dead", "left"},
        "left": {"alive", "suspect", "dead"},
    }
    target = {
        "joined": "alive",
        "suspect": "suspect",
        "dead": "dead",
        "alive": "alive",
        "rejoined": "alive",
        "left": "left",
    }
    for step, inc, beat, status in observations:
        now += step
        m.observe(A, inc, beat, status, now)
        if A not in reported and m.member(A) is not None and m.member(A).status == "left":
            reported[A] = "left"  # first seen as already left: history, silently
        for event in m.tick(now, cluster_size=4):
            assert event.previous == reported.get(A)
            assert event.previous in allowed[event.kind]
            reported[A] = target[event.kind]
        if A in reported:
            assert m.status(A, now) == reported[A]


def test_take_events_reports_observed_transitions_at_once_and_only_once():
    m = Membership(SELF)
    m.observe(A, 1, 1, "alive", now=0.0)
    assert kinds(m.take_events()) == [("joined", A)]
    m.observe(A, 1, 2, "left", now=0.5)
    assert kinds(m.take_events()) == [("left", A)]
    assert m.take_events() == []
    assert m.tick(0.5, cluster_size=2) == []  # already taken: not reported twice
    m.observe(B, 1, 1, "alive", now=1.0)
    assert kinds(m.take_events()) == [("joined", B)]  # no timeouts applied, however late we ask
    assert kinds(m.tick(100.0)) == [("suspect", B), ("dead", B)]
