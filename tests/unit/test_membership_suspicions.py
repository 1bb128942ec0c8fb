"""Suspicions from probes in the pure failure detector: suspect at once, dead after
suspicion_timeout(n), cleared only by an advance (refutation), latched when observers drop it."""

from __future__ import annotations

import pytest

from daemon.cluster.membership import Membership, MembershipConfig

SELF = b"\x00" * 32
A = b"\xaa" * 32
B = b"\xbb" * 32
C = b"\xcc" * 32


def kinds(events):
    return [(e.kind, e.node_id) for e in events]


def member_at(freshness=(1, 5), size=3, now=0.0):
    m = Membership(SELF)
    m.observe(A, *freshness, "alive", now=now)
    m.tick(now, cluster_size=size)
    return m


def test_a_suspicion_at_the_current_freshness_is_suspect_now_and_dead_after_the_suspicion_timeout():
    m = member_at()
    m.observe_suspicions(B, {A: (1, 5)}, now=1.0)
    assert kinds(m.take_events()) == [("suspect", A)]
    assert m.status(A, 1.0) == "suspect"
    assert m.suspected_by(A) == 1
    assert m.status(A, 4.99) == "suspect"  # suspicion_timeout(3) = 4 x 1 x 1 s
    assert kinds(m.tick(5.0)) == [("dead", A)]
    assert m.alive_ids(5.0) == [SELF]


def test_the_suspicion_timeout_scales_with_the_cluster_and_the_probe_interval():
    m = Membership(SELF, MembershipConfig(probe_interval=0.5))
    m.observe(A, 1, 1, "alive", now=0.0)
    m.tick(0.0, cluster_size=1000)
    m.observe_suspicions(B, {A: (1, 1)}, now=0.0)
    assert m.status(A, 5.9) == "suspect"  # 4 x log10(1000) x 0.5 s = 6 s
    assert m.status(A, 6.0) == "dead"


def test_a_suspicion_of_an_older_freshness_does_not_count():
    m = member_at((1, 5))
    m.observe_suspicions(B, {A: (1, 4)}, now=1.0)
    m.observe_suspicions(C, {A: (0, 99)}, now=1.0)
    assert m.status(A, 1.0) == "alive"
    assert m.suspected_by(A) == 0
    assert m.take_events() == []


def test_an_advance_refutes_the_suspicion_and_the_node_stays_alive():
    m = member_at((1, 5))
    m.observe_suspicions(B, {A: (1, 5)}, now=1.0)
    m.observe(A, 1, 6, "alive", now=2.0)  # the refutation: its next heartbeat
    assert kinds(m.take_events()) == [("suspect", A), ("alive", A)]
    assert m.status(A, 5.5) == "alive"
    assert m.suspected_by(A) == 0


def test_the_suspicion_latches_when_the_observer_drops_the_target():
    m = member_at((1, 5))
    m.observe_suspicions(B, {A: (1, 5)}, now=1.0)
    m.observe_suspicions(B, {}, now=2.0)  # observers keep their values small
    assert m.status(A, 2.0) == "suspect"
    assert m.status(A, 5.0) == "dead"


def test_a_suspicion_naming_a_freshness_not_seen_yet_counts_once_the_record_arrives():
    m = member_at((1, 5))
    m.observe_suspicions(B, {A: (1, 7)}, now=1.0)  # B held a newer record than we do
    assert m.status(A, 1.0) == "suspect"
    m.observe(A, 1, 7, "alive", now=2.0)  # that record: still what B suspects
    assert m.status(A, 2.0) == "suspect"
    m.observe(A, 1, 8, "alive", now=3.0)  # past it: refuted
    assert m.status(A, 3.0) == "alive"
    unknown = Membership(SELF)
    unknown.observe_suspicions(B, {A: (1, 5)}, now=0.0)  # named before we know the node
    unknown.observe(A, 1, 5, "alive", now=1.0)
    assert kinds(unknown.take_events()) == [("joined", A), ("suspect", A)]


def test_left_and_dead_nodes_are_not_made_suspect():
    m = member_at((1, 5))
    m.observe(A, 1, 6, "left", now=1.0)
    m.observe_suspicions(B, {A: (1, 6)}, now=1.0)
    assert m.status(A, 1.0) == "left"
    dead = member_at((1, 5))
    dead.tick(100.0)
    assert dead.status(A, 100.0) == "dead"
    dead.take_events()
    dead.observe_suspicions(B, {A: (1, 5)}, now=100.0)
    assert dead.take_events() == []


def test_silence_stays_the_backstop_next_to_suspicions():
    m = member_at((1, 5))
    assert m.status(A, 4.0) == "suspect"  # suspect_timeout(3) = 4 s of silence
    m.observe_suspicions(B, {A: (1, 5)}, now=4.5)
    assert m.status(A, 8.4) == "suspect"
    assert m.status(A, 8.5) == "dead"  # the suspicion (4 s) beats silence (12 s)


def test_suspecting_lists_what_an_observer_should_keep_in_its_value():
    m = Membership(SELF)
    for node, freshness in ((A, (1, 5)), (B, (1, 5)), (C, (1, 5))):
        m.observe(node, *freshness, "alive", now=0.0)
    m.tick(0.0, cluster_size=4)
    m.observe_suspicions(SELF, {A: (1, 5), B: (1, 5), C: (1, 5), b"\xdd" * 32: (1, 1)}, now=0.0)
    m.observe(B, 1, 6, "alive", now=1.0)  # refuted
    m.observe(C, 1, 6, "left", now=1.0)  # left
    assert list(m.suspecting(SELF, 1.0)) == [A]  # the unknown one is not kept either
    m.tick(4.0)
    assert m.status(A, 4.0) == "dead"
    assert list(m.suspecting(SELF, 7.9)) == [A]  # dead, kept one more suspicion timeout
    assert list(m.suspecting(SELF, 8.0)) == []
    m.forget(SELF)
    assert list(m.suspecting(SELF, 8.0)) == []


def test_suspected_by_counts_each_observer_once():
    m = member_at((1, 5))
    for observer in (B, C, SELF):
        m.observe_suspicions(observer, {A: (1, 5)}, now=1.0)
    m.observe_suspicions(B, {A: (1, 5)}, now=1.5)
    assert m.suspected_by(A) == 3
    assert m.suspected_by(B) == 0
    with pytest.raises(ValueError):
        m.observe(A, 1, 9, "weird", now=2.0)


def test_a_late_record_still_named_by_the_suspicion_does_not_restart_its_timer():
    m = member_at((1, 7))  # we missed the record (1, 8)
    m.observe_suspicions(B, {A: (1, 8)}, now=1.0)
    m.observe(A, 1, 8, "alive", now=3.0)  # it arrives late; the suspicion still names it
    assert m.status(A, 4.99) == "suspect"
    assert m.status(A, 5.0) == "dead"  # 4 s after the suspicion first counted, not after 3.0


def test_refutation_goes_past_whatever_freshness_the_suspicion_names():
    from daemon.cluster.suspicions import names_me, refutation_point

    assert names_me({A: (1, 5)}, A, (1, 5)) == (1, 5)
    assert names_me({A: (1, 4)}, A, (1, 5)) is None
    assert names_me({B: (1, 9)}, A, (1, 5)) is None
    assert refutation_point((1, 5), (1, 5)) == (1, 5)  # publish (1, 6)
    assert refutation_point((1, 99), (1, 5)) == (1, 99)  # a made-up heartbeat: jump past it
    assert refutation_point((3, 0), (1, 5)) is None  # a later incarnation: take a new one
