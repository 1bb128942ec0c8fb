"""Whom to probe next (daemon/cluster/probe_order.py, pure): a shuffled round robin."""

from __future__ import annotations

import random

from daemon.cluster.probe_order import ProbeOrder

PEERS = [bytes([n]) * 32 for n in range(1, 9)]


def rounds(order: ProbeOrder, candidates, count):
    return [[order.next(candidates) for _ in range(len(candidates))] for _ in range(count)]


def test_every_candidate_once_per_round_in_a_fresh_order_each_round():
    order = ProbeOrder(random.Random(4))
    seen = rounds(order, PEERS, 6)
    for one in seen:
        assert sorted(one) == sorted(PEERS)
    assert len({tuple(one) for one in seen}) > 1


def test_the_order_is_decided_by_the_seed():
    assert rounds(ProbeOrder(random.Random(9)), PEERS, 3) == rounds(ProbeOrder(random.Random(9)), PEERS, 3)
    assert rounds(ProbeOrder(random.Random(9)), PEERS, 3) != rounds(ProbeOrder(random.Random(10)), PEERS, 3)


def test_a_new_candidate_joins_the_current_round_and_a_gone_one_is_skipped():
    order = ProbeOrder(random.Random(1))
    first = [order.next(PEERS[:4]) for _ in range(2)]
    gone = next(p for p in PEERS[:4] if p not in first)
    now = [p for p in PEERS[:4] if p != gone] + [PEERS[4]]
    rest = [order.next(now) for _ in range(2)]  # what is left of this round: one old, one new
    assert gone not in rest
    assert sorted(first + rest) == sorted(p for p in PEERS[:5] if p != gone)


def test_no_candidates_means_nothing_to_probe():
    order = ProbeOrder(random.Random(1))
    assert order.next([]) is None
    assert order.next(PEERS[:1]) == PEERS[0]
    assert order.next([]) is None
