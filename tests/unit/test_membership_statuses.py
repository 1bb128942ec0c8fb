"""Membership.statuses(now): every member's status at `now`, kept while nothing can have moved
it (so gossip rounds and job-loop passes need not recompute every member's timeouts); it must
always equal status() asked member by member."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.cluster.membership import Membership, MembershipConfig

SELF = b"\x00" * 32
PEERS = [bytes([n]) * 32 for n in range(1, 7)]

# (kind, peer, observer, amount): 0 advance, 1 left, 2 suspicion by observer, 3 observer drops
# its suspicions, 4 tick with a cluster size, 5 forget, 6 time passes (amount tenths of seconds)
step = st.tuples(st.integers(0, 6), st.integers(0, 5), st.integers(0, 5), st.integers(0, 400))


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_statuses_always_equal_status_member_by_member(steps):
    membership = Membership(SELF, MembershipConfig())
    now = 0.0
    freshness = {peer: 0 for peer in PEERS}
    for kind, peer_number, observer_number, amount in steps:
        peer, observer = PEERS[peer_number], PEERS[observer_number]
        if kind == 0:
            freshness[peer] += 1
            membership.observe(peer, 1, freshness[peer], "alive", now)
        elif kind == 1:
            freshness[peer] += 1
            membership.observe(peer, 1, freshness[peer], "left", now)
        elif kind == 2:
            membership.observe_suspicions(observer, {peer: (1, freshness[peer])}, now)
        elif kind == 3:
            membership.observe_suspicions(observer, {}, now)
        elif kind == 4:
            membership.tick(now, 1 + amount * 3)
            # What a tick leaves behind: every member's reported status is its status now.
            assert all(
                member.status == membership.status(member.node_id, now)
                for member in map(membership.member, membership.known_ids())
            )
        elif kind == 5:
            membership.forget(peer)
        else:
            now += amount / 10
        expected = {node_id: membership.status(node_id, now) for node_id in membership.known_ids()}
        assert membership.statuses(now) == expected
        now += 0.05
        expected = {node_id: membership.status(node_id, now) for node_id in membership.known_ids()}
        assert membership.statuses(now) == expected


def test_statuses_is_the_same_object_until_something_changes():
    membership = Membership(SELF, MembershipConfig())
    membership.observe(PEERS[0], 1, 1, "alive", 0.0)
    membership.tick(0.0, 10)
    first = membership.statuses(0.0)
    assert first == {PEERS[0]: "alive"}
    membership.observe(PEERS[0], 1, 2, "alive", 1.0)  # an advance moves no status
    assert membership.statuses(2.0) is first
    # Kept until the deadline the answer was computed with (the timeout after the advance
    # at 0.0: an advance only moves deadlines later), then computed again, still alive.
    timeout = MembershipConfig().suspect_timeout(10)
    assert membership.statuses(timeout - 0.01) is first
    assert membership.statuses(timeout) == first
    # Silence: suspect once the suspect timeout (4 x 10/3 s at 10 nodes) has passed since 1.0.
    suspect_at = 1.0 + timeout
    later = membership.statuses(suspect_at)
    assert later == {PEERS[0]: "suspect"} and later is not first
    membership.observe(PEERS[1], 1, 1, "alive", suspect_at)  # a new member: a new answer
    assert membership.statuses(suspect_at) == {PEERS[0]: "suspect", PEERS[1]: "alive"}
