"""The document's own per-writer clock map (what the checks of every update received read
instead of pycrdt's O(writers) state vector) and the update reader it is kept from."""

from __future__ import annotations

import random

from crdt_nodes import FakeNode, cluster, rogue_update, snapshot_view
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt_state.document import ClusterDocument
from crdt_state.signing import seal_record
from crdt_state.state_vector import decode_state_vector
from crdt_state.update_structs import read_update


def _clocks_agree(doc: ClusterDocument) -> None:
    pycrdt_clocks = decode_state_vector(doc.state_vector())
    assert {client: clock for client, clock in doc._clocks.items() if clock} == pycrdt_clocks
    assert decode_state_vector(doc._shadow.get_state()) == pycrdt_clocks


# One step of traffic a receiver sees: 0 heartbeat, 1 job, 2 run rewrite, 3 forged update
# (refused: rebuild), 4 anti-entropy diff from a peer (many writers, whole delete set),
# 5 restart of a writer (rebuilt from its store, new client id), 6 local write of our own.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2)), min_size=1, max_size=25),
    seed=st.integers(0, 2**32),
)
def test_the_clock_map_agrees_with_pycrdts_state_vector(steps, seed):
    rng = random.Random(seed)
    writers = cluster(3)
    receiver = FakeNode.create()
    receiver.heartbeat()
    for writer in writers:
        assert receiver.doc.apply_remote(writer.doc.update_since(receiver.doc.state_vector())).accepted
    waiting: list[bytes] = []
    for number, (kind, who) in enumerate(steps):
        writer = writers[who]
        if kind == 0:
            writer.heartbeat()
        elif kind == 1:
            writer.put("jobs", f"{number:064x}", "job", {"n": number})
        elif kind == 2:
            writer.put("runs", f"{'ab' * 32}:{writer.hex}", "run", {"state": f"s{number}"})
        elif kind == 3:
            forged = rogue_update(receiver.doc, {("nodes", writer.hex): b"not a record"})
            assert not receiver.doc.apply_remote(forged).accepted
        elif kind == 4:
            diff = writer.doc.update_since(receiver.doc.state_vector())
            result = receiver.doc.apply_remote(diff)
            assert result.accepted or result.missing, result.reason
        elif kind == 5:
            writer.doc = ClusterDocument.from_updates([writer.doc.full_state()], writer.node_id)
            writer.incarnation += 1
            writer.heartbeat()
        else:
            receiver.heartbeat()
            receiver.doc.drain_local_updates()
        waiting += writer.doc.drain_local_updates()
        rng.shuffle(waiting)  # pushes overtake each other: some arrive before what they build on
        for update in waiting[: rng.randint(0, len(waiting))]:
            result = receiver.doc.apply_remote(update)
            if result.accepted:
                waiting.remove(update)
            else:
                assert result.missing, result.reason
        _clocks_agree(receiver.doc)
    for update in waiting:  # the rest arrives, in any order, with repairs where needed
        receiver.doc.apply_remote(update)
    for writer in writers:
        diff = writer.doc.update_since(receiver.doc.state_vector())
        assert receiver.doc.apply_remote(diff).accepted
    _clocks_agree(receiver.doc)
    twin = ClusterDocument.from_updates([receiver.doc.full_state()])
    _clocks_agree(twin)
    assert snapshot_view(twin)[:2] == snapshot_view(receiver.doc)[:2]


def test_the_reader_gives_each_writers_range_and_the_references():
    x = Doc({"jobs": Map()}, client_id=11)
    y = Doc({"jobs": Map()}, client_id=22)
    x["jobs"]["k"] = b"x1"
    x["jobs"]["k"] = b"x2"
    y.apply_update(x.get_update())
    before = y.get_state()
    y["jobs"]["k"] = b"y1"  # builds on x's second item, deletes it
    y["jobs"]["other"] = "text"
    structs = read_update(y.get_update(before))
    assert structs.writers == {22: (0, 2)}
    assert ((22, 0), (11, 1)) in structs.references  # origin: x's item it replaced
    assert structs.deletes == {11: [(0, 2)]}  # a diff carries the whole delete set
    whole = read_update(y.get_update())
    assert whole.writers == {11: (0, 2), 22: (0, 2)}
    assert whole.deletes == {11: [(0, 2)]}
    assert {client: end for client, (_start, end) in whole.writers.items()} == decode_state_vector(
        y.get_state()
    )


def test_the_reader_measures_every_content_kind_as_pycrdt_counts_clocks():
    doc = Doc({"m": Map(), "t": Text(), "a": Array()}, client_id=5)
    doc["m"]["bytes"] = b"\x00" * 300
    doc["m"]["any"] = {"nested": [1, 2.5, None, True, "s", b"b", 2**40, -7]}
    doc["t"] += "h\u00e9llo \U0001f600"  # a code point outside the BMP counts two clocks
    doc["a"].extend([1, "two", {"three": 3}])
    del doc["m"]["bytes"]
    structs = read_update(doc.get_update())
    assert structs is not None
    assert {client: end for client, (_start, end) in structs.writers.items()} == decode_state_vector(
        doc.get_state()
    )


def test_the_reader_leaves_what_it_does_not_describe_to_pycrdt():
    doc = Doc({"m": Map()}, client_id=5)
    doc["m"]["nested"] = Map({"x": 1})  # a shared type inside: formd never writes one
    assert read_update(doc.get_update()) is None
    honest = Doc({"m": Map()}, client_id=6)
    honest["m"]["k"] = b"v"
    update = honest.get_update()
    assert read_update(update) is not None
    assert read_update(update + b"\x00") is None  # trailing bytes
    assert read_update(update[:-3]) is None  # truncated
    assert read_update(b"") is None
    for _ in range(200):  # random damage never raises
        damaged = bytearray(update)
        damaged[random.randrange(len(damaged))] = random.randrange(256)
        read_update(bytes(damaged))


# Steps for two receivers, one telling changed entries from the update's bytes (item_keys.py)
# and one always from pycrdt's map events: 0 heartbeat, 1 job, 2 run rewrite, 3 two writers
# write the same job key concurrently, 4 a job and the deletion of the writer's jobs, 5 restart of a writer, 6 forged
# update, 7 anti-entropy diff, 8 a copy of the receiver's own state rewrites a key raw.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=25
    ),
    seed=st.integers(0, 2**32),
)
def test_entries_told_from_the_bytes_match_pycrdts_events(steps, seed):
    rng = random.Random(seed)
    writers = cluster(3)
    told, observed = ClusterDocument(), ClusterDocument()
    observed._changed_entries = lambda structs: None  # always pycrdt's events
    for receiver in (told, observed):
        receiver.may_delete = lambda map_name, key, entry: True
        for writer in writers:
            assert receiver.apply_remote(writer.doc.update_since(receiver.state_vector())).accepted
    waiting: list[bytes] = []
    for number, (kind, who, which) in enumerate(steps):
        writer, other = writers[who], writers[(who + 1) % 3]
        job_key = f"{which:064x}"
        if kind == 0:
            writer.heartbeat()
        elif kind == 1:
            writer.put("jobs", job_key, "job", {"n": number})
        elif kind == 2:
            writer.put("runs", f"{'ab' * 32}:{writer.hex}", "run", {"state": f"s{number}"})
        elif kind == 3:
            writer.put("jobs", job_key, "job", {"by": writer.hex, "n": number})
            other.put("jobs", job_key, "job", {"by": other.hex, "n": number})
            waiting += other.doc.drain_local_updates()
        elif kind == 4:  # a job, then its retirement (and of any other this writer holds)
            writer.put("jobs", job_key, "job", {"n": number})
            waiting += writer.doc.drain_local_updates()
            writer.doc.delete_local([("jobs", f"{k:064x}") for k in range(4)])
        elif kind == 5:
            writer.doc = ClusterDocument.from_updates([writer.doc.full_state()], writer.node_id)
            writer.incarnation += 1
            writer.heartbeat()
        elif kind == 6:
            waiting.append(rogue_update(told, {("nodes", writer.hex): b"not a record"}))
        elif kind == 7:
            waiting.append(writer.doc.update_since(told.state_vector()))
        else:
            waiting.append(
                rogue_update(told, {("jobs", job_key): seal_record(other.key, "job", {"raw": number})})
            )
        waiting += writer.doc.drain_local_updates()
        rng.shuffle(waiting)
        for update in list(waiting[: rng.randint(0, len(waiting))]):
            results = [receiver.apply_remote(update) for receiver in (told, observed)]
            assert results[0] == results[1]
            if results[0].accepted or not results[0].missing:
                waiting.remove(update)
        assert snapshot_view(told) == snapshot_view(observed)
    assert told.rebuilds == observed.rebuilds
