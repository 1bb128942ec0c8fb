import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.cluster.gossip import (
    BroadcastQueue,
    PayloadError,
    anti_entropy_interval,
    own_write_limit,
    pack_payload,
    pick,
    retransmit_limit,
    unpack_payload,
)


def test_retransmit_limit_follows_memberlist():
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8  # log10(11) rounds up to 2
    assert retransmit_limit(4, 1000) == 16


def test_anti_entropy_scales_only_past_32_nodes():
    assert anti_entropy_interval(30, 3) == 30
    assert anti_entropy_interval(30, 32) == 30
    assert anti_entropy_interval(30, 64) == 60
    assert anti_entropy_interval(30, 1000) == 30 * 6


def test_each_update_is_sent_exactly_limit_times():
    queue = BroadcastQueue()
    queue.add(b"a", 3)
    queue.add(b"b", 3)
    sent = []
    for _ in range(10):
        sent.extend(queue.take(byte_budget=1 << 20))
    assert sorted(sent) == [b"a"] * 3 + [b"b"] * 3
    assert len(queue) == 0


def test_take_respects_the_byte_budget_and_prefers_least_sent():
    queue = BroadcastQueue()
    queue.add(b"x" * 100, 5)
    first = queue.take(byte_budget=150)
    queue.add(b"y" * 100, 5)
    second = queue.take(byte_budget=150)
    assert first == [b"x" * 100]
    assert second == [b"y" * 100]  # fresher (never sent) goes first


def test_one_writers_updates_leave_in_the_order_made():
    queue = BroadcastQueue()
    for i in range(5):
        queue.add(bytes([i]), 2)
    assert queue.take(byte_budget=1 << 20) == [bytes([i]) for i in range(5)]


def test_each_update_keeps_its_own_limit():
    queue = BroadcastQueue()
    queue.add(b"heartbeat", 1)
    queue.add(b"label", 3)
    sent = [u for _ in range(5) for u in queue.take(byte_budget=1 << 20)]
    assert sent.count(b"heartbeat") == 1 and sent.count(b"label") == 3


def test_full_queue_sheds_the_most_sent():
    queue = BroadcastQueue(max_entries=2)
    queue.add(b"old", 10)
    queue.take(byte_budget=1 << 20)
    queue.add(b"new1", 10)
    queue.add(b"new2", 10)
    assert len(queue) == 2
    assert sorted(queue.take(byte_budget=1 << 20)) == [b"new1", b"new2"]


@given(st.lists(st.binary(max_size=50), max_size=40))
def test_payload_round_trip(messages):
    assert unpack_payload(pack_payload(messages)) == messages


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\x91\x01", b"\xa3abc", b"\x92\xc4\x01a"])
def test_bad_payloads_are_refused(payload):
    with pytest.raises(PayloadError):
        unpack_payload(payload)


def test_pick_is_distinct_and_seeded():
    items = list(range(20))
    one = pick(random.Random(7), items, 3)
    assert len(set(one)) == 3 and one == pick(random.Random(7), items, 3)
    assert sorted(pick(random.Random(1), items[:2], 3)) == [0, 1]


def test_own_writes_go_to_at_least_one_whole_fanout():
    assert own_write_limit(retransmit_limit(1, 4), 3) == 3  # heartbeats under 10 nodes: 1 -> 3
    assert own_write_limit(retransmit_limit(1, 1000), 3) == 4  # already above the fanout
    assert own_write_limit(retransmit_limit(4, 4), 3) == 4
