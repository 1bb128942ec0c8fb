"""Pushed updates refused as missing, held until a repair covers them (daemon/cluster/held_back.py)."""

import pycrdt

from daemon.cluster.held_back import MAX_PER_SENDER, MAX_SENDERS, HeldBack, covered


def two_writes():
    """Two successive updates of one writer, and the state vectors before, between and after."""
    doc = pycrdt.Doc({"nodes": pycrdt.Map()}, client_id=7)
    states = [doc.get_state()]
    updates = []
    for value in (b"first", b"second"):
        before = doc.get_state()
        doc["nodes"]["a"] = value
        updates.append(doc.get_update(before))
        states.append(doc.get_state())
    return updates, states


def test_an_update_is_covered_only_once_everything_it_holds_is_held():
    (first, second), (empty, after_first, after_both) = two_writes()
    assert not covered(first, empty)
    assert covered(first, after_first) and covered(first, after_both)
    assert not covered(second, empty)  # it builds on the first write
    assert not covered(second, after_first)
    assert covered(second, after_both)


def test_garbage_is_never_covered():
    _, (_, _, after_both) = two_writes()
    assert not covered(b"\xff\xff\xff\x01garbage", after_both)


def test_settle_hands_back_what_is_covered_and_keeps_the_rest():
    (first, second), (_, after_first, after_both) = two_writes()
    held = HeldBack()
    held.add("s:1", first)
    held.add("s:1", second)
    held.add("s:1", second)  # the same push twice is held once
    held.add("t:1", second)
    assert len(held) == 3
    assert held.settle("s:1", after_first) == [first]
    assert held.waiting("s:1") and held.waiting("t:1")
    assert held.settle("s:1", after_both) == [second]
    assert not held.waiting("s:1")
    assert held.settle("s:1", after_both) == []
    assert held.settle("t:1", after_both) == []  # handed back already, from s:1
    assert len(held) == 0
    held.add("u:1", first)
    held.drop("u:1")
    assert not held.waiting("u:1") and len(held) == 0


def test_it_stays_bounded():
    held = HeldBack()
    for number in range(MAX_PER_SENDER + 5):
        held.add("s:1", number.to_bytes(4, "big"))
    assert len(held) == MAX_PER_SENDER
    for number in range(MAX_SENDERS + 3):
        held.add(f"peer{number}:1", b"x")
    assert not held.waiting("s:1")  # the least recently heard from was forgotten first
    assert len(held) == MAX_SENDERS
