"""The pure sync protocol: wire form, garbage handling, and convergence in any delivery order."""

from __future__ import annotations

import pytest
from crdt_nodes import FakeNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_state.document import ClusterDocument
from crdt_state.sync import (
    SyncError,
    SyncStep1,
    SyncStep2,
    Update,
    decode,
    decode_batch,
    decode_state_vector,
    encode,
    encode_batch,
    handle,
    handle_message,
)

messages = st.one_of(
    st.builds(SyncStep2, st.binary(min_size=1, max_size=50)),
    st.builds(Update, st.binary(min_size=1, max_size=50)),
)


@given(messages)
def test_update_messages_round_trip(message):
    assert decode(encode(message)) == message


def test_step1_round_trips_with_its_reply_flag():
    node = FakeNode.create()
    node.heartbeat()
    for reply in (True, False):
        message = SyncStep1(node.doc.state_vector(), reply=reply)
        assert decode(encode(message)) == message


def test_batches_round_trip():
    batch = [SyncStep1(b"\x00"), SyncStep2(b"\x00\x00"), Update(b"\x01")]
    assert decode_batch(encode_batch(batch)) == batch


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_garbage_decodes_to_a_sync_error_or_a_message_never_a_crash(data):
    try:
        message = decode(data)
    except SyncError:
        return
    assert encode(message) == data


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_garbage_batches_are_sync_errors(data):
    try:
        messages = decode_batch(data)
    except SyncError:
        return
    assert decode_batch(encode_batch(messages)) == messages  # what decodes is a real batch


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"\x09abc", "unknown sync message type"),
        (b"\x01", "reply flag"),
        (b"\x01\x07\x00", "reply flag"),
        (b"\x01\x01\x01\x05", "truncated"),
        (b"\x01\x01\x00\x00", "trailing"),
        (b"\x02", "no update"),
        ("text", "bytes"),
    ],
)
def test_bad_messages_say_why(data, reason):
    with pytest.raises(SyncError, match=reason):
        decode(data)


def test_state_vector_decoding_matches_pycrdt():
    writers = [ClusterDocument(client_id=cid) for cid in (3, 200, 2**40)]
    nodes = [FakeNode(FakeNode.create().key, doc) for doc in writers]
    reader = ClusterDocument()
    for node in nodes:
        node.doc.local_node_id = node.node_id
        node.heartbeat()
        node.heartbeat()
        for update in node.doc.drain_local_updates():
            assert reader.apply_remote(update).accepted
    assert decode_state_vector(reader.state_vector()) == {3: 2, 200: 2, 2**40: 2}
    assert decode_state_vector(ClusterDocument().state_vector()) == {}


def test_one_exchange_goes_both_ways_and_stops():
    a, b = FakeNode.create(), FakeNode.create()
    a.heartbeat()
    b.heartbeat()
    replies = handle(b.doc, decode(encode(SyncStep1(a.doc.state_vector()))))
    assert [type(reply) for reply in replies] == [SyncStep2, SyncStep1]
    assert replies[1].reply is False
    answers = []
    for reply in replies:
        answers += handle(a.doc, decode(encode(reply)))
    assert [type(answer) for answer in answers] == [SyncStep2]
    assert handle(b.doc, answers[0]) == []
    assert a.doc.node_records() == b.doc.node_records()
    # Once in step, a step1 gets only a (tiny) step2 back: no step1, nothing to loop on.
    assert [type(r) for r in handle(b.doc, SyncStep1(a.doc.state_vector()))] == [SyncStep2]


def test_a_pushed_update_with_a_gap_asks_for_the_rest():
    a, b = FakeNode.create(), FakeNode.create()
    a.heartbeat()
    a.heartbeat()
    _first, second = a.doc.drain_local_updates()
    replies, result = handle_message(b.doc, Update(second))
    assert result.missing and not result.accepted
    assert replies == [SyncStep1(b.doc.state_vector(), reply=False)]
    (step2,) = handle(a.doc, replies[0])
    assert handle(b.doc, step2) == []
    assert b.doc.node_records()[a.node_id].heartbeat == 2


def test_a_refused_update_is_reported_and_not_answered():
    a = FakeNode.create()
    replies, result = handle_message(a.doc, SyncStep2(b"\x01\x02\x03"))
    assert replies == [] and not result.accepted and "decode" in result.reason


def test_a_bad_state_vector_in_step1_is_a_sync_error():
    a = FakeNode.create()
    with pytest.raises(SyncError):
        handle(a.doc, SyncStep1(b"\x05\x01"))


# ---- convergence: any order, duplicates, losses; anti-entropy at the end -------------------

actions = st.lists(
    st.one_of(
        st.tuples(st.just("beat"), st.integers(0, 2), st.sets(st.integers(0, 2))),
        st.tuples(st.just("job"), st.integers(0, 2), st.sets(st.integers(0, 2))),
        st.tuples(st.just("step1"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("deliver"), st.integers(0, 1000), st.booleans()),
        st.tuples(st.just("drop"), st.integers(0, 1000), st.booleans()),
    ),
    max_size=40,
)


def _run(nodes, script, final_order):
    in_flight: list[tuple[int, int, bytes]] = []  # (sender, receiver, wire bytes)
    jobs = [0, 0, 0]

    def push_local(index, targets):
        for update in nodes[index].doc.drain_local_updates():
            for target in targets:
                if target != index:
                    in_flight.append((index, target, encode(Update(update))))

    def deliver(position, keep_copy):
        sender, receiver, wire = in_flight[position]
        if not keep_copy:
            del in_flight[position]
        for reply in handle(nodes[receiver].doc, decode(wire)):
            in_flight.append((receiver, sender, encode(reply)))
        push_local(receiver, {sender})  # a re-asserted own record, if any

    for action in script:
        if action[0] == "beat":
            nodes[action[1]].heartbeat(address=f"127.0.0.1:{7000 + nodes[action[1]].beats}")
            push_local(action[1], action[2])
        elif action[0] == "job":
            index = action[1]
            jobs[index] += 1
            nodes[index].put("jobs", f"{index:02x}{jobs[index]:062x}", "job", {"n": jobs[index]})
            push_local(index, action[2])
        elif action[0] == "step1" and action[1] != action[2]:
            in_flight.append((action[1], action[2], encode(SyncStep1(nodes[action[1]].doc.state_vector()))))
        elif action[0] in ("deliver", "drop") and in_flight:
            position = action[1] % len(in_flight)
            if action[0] == "deliver":
                deliver(position, keep_copy=action[2])
            else:
                del in_flight[position]
    for position in final_order:
        if not in_flight:
            break
        deliver(position % len(in_flight), keep_copy=False)
    # Anti-entropy: every pair exchanges state vectors until nothing is in flight.
    for _ in range(2):
        for i in range(3):
            for j in range(3):
                if i != j:
                    in_flight.append((i, j, encode(SyncStep1(nodes[i].doc.state_vector()))))
                    while in_flight:
                        deliver(0, keep_copy=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=actions, final_order=st.lists(st.integers(0, 1000), max_size=60))
def test_three_documents_converge_in_any_delivery_order(script, final_order):
    nodes = [FakeNode.create(seed) for seed in (11, 12, 13)]
    for node in nodes:
        node.heartbeat()
    _run(nodes, script, final_order)
    first = nodes[0].doc
    for node in nodes[1:]:
        assert node.doc.node_records() == first.node_records()
        for map_name in ("jobs", "runs", "cancels"):
            assert {k: e.envelope for k, e in node.doc.items(map_name).items()} == {
                k: e.envelope for k, e in first.items(map_name).items()
            }
        assert decode_state_vector(node.doc.state_vector()) == decode_state_vector(first.state_vector())
    # Everyone sees every node's newest record and every job.
    for node in nodes:
        assert first.node_records()[node.node_id].heartbeat == node.beats
    assert len(first.items("jobs")) == sum(1 for a in script if a[0] == "job")
