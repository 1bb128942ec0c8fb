"""Whom to probe next (shuffled round robin) and the probe payloads, both pure."""

from __future__ import annotations

import random

import pytest

from daemon.cluster.probe_order import ProbeOrder
from daemon.cluster.probe_wire import (
    Ping,
    PingRequest,
    ProbeError,
    decode_probe,
    encode_ack,
    encode_ping,
    encode_ping_request,
    is_ack_from,
    is_probe,
)
from daemon.cluster.wire import NACK

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


def test_probe_payloads_round_trip():
    target = PEERS[0]
    assert decode_probe(encode_ping(target)) == Ping(target)
    assert decode_probe(encode_ping_request(target, "10.0.0.1:7946")) == PingRequest(target, "10.0.0.1:7946")
    assert decode_probe(encode_ping_request(target, "[::1]:7946")) == PingRequest(target, "[::1]:7946")
    assert is_probe(encode_ping(target)) and is_probe(encode_ping_request(target, "h:1"))
    assert not is_probe(b"\x90") and not is_probe(b"\xc0x") and not is_probe(b"\xc1x") and not is_probe(b"")
    assert is_ack_from(encode_ack(target), target)
    assert not is_ack_from(encode_ack(PEERS[1]), target) and not is_ack_from(NACK, target)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\xc2", "ping of 1 bytes"),
        (b"\xc2" + b"x" * 31, "ping of 32 bytes"),
        (b"\xc2" + b"x" * 33, "ping of 34 bytes"),
        (b"\xc3" + b"x" * 32, "does not hold"),
        (b"\xc3" + b"x" * 32 + b"a" * 400, "does not hold"),
        (b"\xc3" + b"x" * 32 + b"no-port", "not host:port"),
        (b"\xc3" + b"x" * 32 + b"\xff\xfe:1", "not host:port"),
        (b"\xc3" + b"x" * 32 + b"::1:80", "not host:port"),
        (b"\xc4" + b"x" * 32, "not a probe"),
    ],
)
def test_malformed_probe_payloads_are_refused_with_a_reason(payload, fragment):
    with pytest.raises(ProbeError, match=fragment):
        decode_probe(payload)
