"""ClusterDocument: local writes, checked remote updates, restore; forged input changes nothing."""

from __future__ import annotations

import pytest
from crdt_nodes import FakeNode, cluster, exchange, rogue_update, snapshot_view
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Map

from crdt_state.document import ClusterDocument, DocumentError
from crdt_state.records import RecordError
from crdt_state.signing import seal_record

JOB = "cd" * 32


def test_records_spread_and_are_readable_everywhere():
    a, b, c = cluster()
    a.heartbeat(address="127.0.0.1:9000")
    exchange(a, b, c)
    for node in (a, b, c):
        records = node.doc.node_records()
        assert set(records) == {a.node_id, b.node_id, c.node_id}
        assert records[a.node_id].address == "127.0.0.1:9000"
        assert records[a.node_id].heartbeat == 2


def test_apply_reports_the_changed_keys():
    a, b = cluster(2)
    a.heartbeat()
    (update,) = a.doc.drain_local_updates()
    result = b.doc.apply_remote(update)
    assert result.accepted and result.reason is None
    assert result.changed == {("nodes", a.hex)}


def test_jobs_runs_cancels_are_read_back_verified():
    a, b = cluster(2)
    a.put("jobs", JOB, "job", {"kind": "run"})
    b.put("runs", f"{JOB}:{b.hex}", "run", {"state": "claimed"})
    a.put("cancels", JOB, "cancel", {"why": "user"})
    exchange(a, b)
    for node in (a, b):
        assert node.doc.get("jobs", JOB).body == {"kind": "run"}
        assert node.doc.get("jobs", JOB).signer_id == a.node_id
        assert node.doc.items("runs")[f"{JOB}:{b.hex}"].body == {"state": "claimed"}
        assert node.doc.get("cancels", JOB).signer_id == a.node_id
    assert a.doc.get("jobs", "ef" * 32) is None


def test_rewriting_the_own_record_keeps_the_document_small():
    a, b = cluster(2)
    size_before = len(b.doc.full_state())
    for _ in range(300):
        a.heartbeat()
    exchange(a, b)
    # The record is rewritten whole 300 times; the document holds one copy plus a tombstone range.
    assert len(b.doc.full_state()) < size_before + 64


def test_a_lagging_replica_takes_a_writers_newest_update():
    # b rewrites its record; a receives that, c does not. a's next heartbeat (which replaces a's
    # previous version of its own key) must carry only a's own change: if it carried a's whole
    # delete set, c would see b's only version it holds deleted and refuse a's honest update.
    a, b, c = cluster()
    b.heartbeat()
    (b_update,) = b.doc.drain_local_updates()
    assert a.doc.apply_remote(b_update).accepted
    a.heartbeat(address="127.0.0.1:9001")
    (a_update,) = a.doc.drain_local_updates()
    result = c.doc.apply_remote(a_update)
    assert result.accepted, result.reason
    assert result.changed == {("nodes", a.hex)}
    assert c.doc.node_records()[a.node_id].address == "127.0.0.1:9001"
    assert c.doc.node_records()[b.node_id].heartbeat == 1  # still b's old record, not deleted
    assert c.doc.apply_remote(b_update).accepted
    assert c.doc.node_records() == a.doc.node_records()


def test_put_local_refuses_what_no_reader_would_accept():
    a, b = cluster(2)
    view = snapshot_view(a.doc)
    with pytest.raises(RecordError, match="another node's key"):
        a.doc.put_local("nodes", b.hex, a.record().seal(a.key))
    with pytest.raises(RecordError, match="signed by this node"):
        a.doc.put_local("nodes", b.hex, b.record(heartbeat=99).seal(b.key))
    with pytest.raises(RecordError, match="older"):
        a.doc.put_local("nodes", a.hex, a.record(heartbeat=0).seal(a.key))
    with pytest.raises(RecordError, match="unknown map"):
        a.doc.put_local("gossip", a.hex, a.record().seal(a.key))
    with pytest.raises(RecordError):
        a.doc.put_local("nodes", a.hex, b"junk")
    assert snapshot_view(a.doc) == view
    assert a.doc.drain_local_updates() == []


# ---- forged and malformed remote updates: refused whole, nothing visible changes -------------


def _forgeries(a: FakeNode, b: FakeNode, victim: ClusterDocument):
    stranger = FakeNode.create()
    yield (
        "record signed by B under A's key",
        "another node's key",
        rogue_update(victim, {("nodes", a.hex): b.record(heartbeat=50).seal(b.key)}),
    )
    yield (
        "record for A signed by B",
        "signed by a different node",
        rogue_update(
            victim, {("nodes", a.hex): seal_record(b.key, "node", a.record(heartbeat=50).to_body())}
        ),
    )
    tampered = bytearray(a.record(heartbeat=50).seal(a.key))
    tampered[-70] ^= 1
    yield "tampered record", "signature", rogue_update(victim, {("nodes", a.hex): bytes(tampered)})
    yield "text value", "not a signed record", rogue_update(victim, {("nodes", a.hex): "hello"})
    yield "number value", "not a signed record", rogue_update(victim, {("jobs", JOB): 5})
    yield "nested map", "not a signed record", rogue_update(victim, {("nodes", a.hex): Map({"x": b"1"})})
    yield "deleted record", "deleting", rogue_update(victim, {}, deletes=[("nodes", b.hex)])
    yield "unknown top-level map", "unknown top-level", rogue_update(victim, {}, roots=["blobs"])
    yield (
        "job from a stranger",
        "unknown node",
        rogue_update(victim, {("jobs", JOB): seal_record(stranger.key, "job", {})}),
    )
    yield (
        "run written for another node",
        "not the node it names",
        rogue_update(victim, {("runs", f"{JOB}:{b.hex}"): seal_record(a.key, "run", {})}),
    )
    yield (
        "bad key",
        "not in the form",
        rogue_update(victim, {("jobs", "not-hex"): seal_record(a.key, "job", {})}),
    )
    yield (
        "cancel envelope in jobs",
        "expected a 'job' record",
        rogue_update(victim, {("jobs", JOB): seal_record(a.key, "cancel", {})}),
    )
    yield (
        "stranger's own node record under a wrong key",
        "another node's key",
        rogue_update(victim, {("nodes", "00" * 32): stranger.record().seal(stranger.key)}),
    )


def test_each_forgery_is_refused_and_changes_nothing():
    a, b, c = cluster()
    b.heartbeat()
    b.heartbeat()
    exchange(a, b, c)
    for label, why, update in _forgeries(a, b, c.doc):
        view = snapshot_view(c.doc)
        result = c.doc.apply_remote(update)
        assert not result.accepted, label
        assert why in result.reason, (label, result.reason)
        assert result.changed == frozenset()
        assert snapshot_view(c.doc) == view, label
    # And the document still takes honest updates afterwards.
    a.heartbeat(address="127.0.0.1:9999")
    exchange(a, b, c)
    assert c.doc.node_records()[a.node_id].address == "127.0.0.1:9999"


def test_a_forged_entry_sinks_the_honest_ones_in_the_same_update():
    a, b, c = cluster()
    honest_and_forged = rogue_update(
        c.doc,
        {
            ("jobs", JOB): seal_record(a.key, "job", {"honest": True}),
            ("nodes", b.hex): a.record(heartbeat=9).seal(a.key),
        },
    )
    view = snapshot_view(c.doc)
    assert not c.doc.apply_remote(honest_and_forged).accepted
    assert snapshot_view(c.doc) == view
    assert c.doc.get("jobs", JOB) is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(max_size=200), cut=st.integers(1, 400), flip=st.integers(0, 10_000))
def test_garbage_truncated_or_bit_flipped_updates_change_nothing(garbage, cut, flip):
    a, b = _PAIR
    a.heartbeat()
    (update,) = a.doc.drain_local_updates()
    damaged = bytearray(update)
    damaged[flip % len(damaged)] ^= 0x40
    view = snapshot_view(b.doc)
    for candidate in (garbage, update[: min(cut, len(update) - 1)], bytes(damaged)):
        result = b.doc.apply_remote(candidate)
        if result.accepted and result.changed:
            # A flipped bit can land in a spot that still decodes to a valid signed record
            # (e.g. the client id): then the honest record must be exactly what is visible.
            assert b.doc.node_records()[a.node_id] == a.record(heartbeat=a.beats)
        elif result.accepted:
            # Valid but changing nothing a reader sees, e.g. b"\x00\x00" (an empty update).
            assert snapshot_view(b.doc)[:2] == view[:2]
        else:
            assert snapshot_view(b.doc) == view
    assert b.doc.apply_remote(update).accepted


_PAIR = cluster(2)


def test_non_bytes_and_oversized_updates_are_refused():
    (a,) = cluster(1)
    assert not a.doc.apply_remote("text").accepted
    assert "limit" in a.doc.apply_remote(b"\x00" * (16 * 1024 * 1024 + 1)).reason


def test_an_update_with_a_gap_is_refused_as_missing_and_taken_later():
    a, b = cluster(2)
    a.heartbeat()
    a.heartbeat()
    first, second = a.doc.drain_local_updates()
    view = snapshot_view(b.doc)
    result = b.doc.apply_remote(second)
    assert not result.accepted and result.missing
    assert snapshot_view(b.doc) == view
    assert b.doc.apply_remote(first).accepted
    assert b.doc.apply_remote(second).accepted
    assert b.doc.node_records()[a.node_id].heartbeat == 3


def test_an_older_record_is_accepted_into_the_document_but_never_shown():
    a, b, c = cluster()
    b.heartbeat()
    exchange(a, b, c)
    view = snapshot_view(c.doc)
    replay = rogue_update(c.doc, {("nodes", b.hex): b.record(heartbeat=0).seal(b.key)})
    result = c.doc.apply_remote(replay)
    assert result.accepted
    assert result.stale == {b.hex}
    assert result.changed == frozenset()
    assert snapshot_view(c.doc)[:2] == view[:2]  # readers see exactly what they saw before
    assert c.doc.node_records()[b.node_id].heartbeat == 2
    assert c.doc.drain_local_updates() == []  # not c's record: c does not rewrite it


def test_own_record_made_older_by_a_peer_is_written_again_on_top():
    # a's newest record is (1, 3); a peer writes a's (1, 2) on top of it. a accepts the history
    # and writes its newest record again, which then wins on every replica.
    a, b, c = cluster()
    a.heartbeat()
    newest = a.heartbeat()
    exchange(a, b, c)
    replay = rogue_update(b.doc, {("nodes", a.hex): a.record(heartbeat=2).seal(a.key)})
    assert c.doc.apply_remote(replay).stale == {a.hex}
    result = a.doc.apply_remote(replay)
    assert result.accepted and result.stale == {a.hex}
    assert a.doc.node_records()[a.node_id].heartbeat == 3
    (reassert,) = a.doc.drain_local_updates()
    assert c.doc.apply_remote(reassert).accepted
    # A replica restored from its store (no memory of what it showed) sees the newest too.
    for doc in (a.doc, c.doc):
        restored = ClusterDocument.from_updates([doc.full_state()])
        assert restored.get("nodes", a.hex).envelope == newest


def test_update_since_rejects_an_undecodable_state_vector():
    (a,) = cluster(1)
    with pytest.raises(DocumentError):
        a.doc.update_since(b"\xff\xff\xff")
    with pytest.raises(DocumentError):
        a.doc.update_since("text")


def test_update_since_gives_only_what_is_missing():
    a, b = cluster(2)
    for _ in range(5):
        a.heartbeat()
    diff = a.doc.update_since(b.doc.state_vector())
    assert len(diff) < len(a.doc.full_state())
    assert b.doc.apply_remote(diff).accepted
    assert b.doc.node_records() == a.doc.node_records()


def test_from_updates_restores_the_same_view_and_skips_bad_entries():
    a, b = cluster(2)
    a.put("jobs", JOB, "job", {"x": 1})
    exchange(a, b)
    stranger = FakeNode.create()
    # A bad entry that got into a store anyway (e.g. written by an older version) is skipped.
    poisoned = rogue_update(a.doc, {("jobs", "ef" * 32): seal_record(stranger.key, "job", {})})
    restored = ClusterDocument.from_updates([a.doc.full_state(), poisoned], a.node_id)
    assert restored.node_records() == a.doc.node_records()
    assert restored.get("jobs", JOB).body == {"x": 1}
    assert restored.get("jobs", "ef" * 32) is None
    assert len(restored.ignored) == 1 and "unknown node" in restored.ignored[0]
    broken = ClusterDocument.from_updates([a.doc.full_state(), b"garbage"], a.node_id)
    assert broken.node_records() == a.doc.node_records()
    assert len(broken.ignored) == 1 and "does not decode" in broken.ignored[0]


def test_added_tells_new_history_from_a_duplicate():
    a, b, c = cluster()
    a.heartbeat()
    (update,) = a.doc.drain_local_updates()
    first = b.doc.apply_remote(update)
    assert first.accepted and first.added
    again = b.doc.apply_remote(update)
    assert again.accepted and not again.added and again.changed == frozenset()
    # An older record is new history (store it) even though nothing visible changes.
    replay = rogue_update(c.doc, {("nodes", b.hex): b.record(heartbeat=0).seal(b.key)})
    result = c.doc.apply_remote(replay)
    assert result.added and result.changed == frozenset()


def test_a_duplicate_is_answered_from_the_seen_digests_until_a_rebuild(monkeypatch):
    import crdt_state.document as document_module

    a, b, c = cluster()
    a.heartbeat()
    (update,) = a.doc.drain_local_updates()
    assert b.doc.apply_remote(update).added
    checked = []
    real_read = document_module.read_update
    monkeypatch.setattr(
        document_module, "read_update", lambda update: checked.append(update) or real_read(update)
    )
    again = b.doc.apply_remote(update)
    assert again.accepted and not again.added and update not in checked  # never reached the shadow
    # A refusal rebuilds the shadow and forgets the digests: the same bytes take the full path,
    # and still change nothing.
    forged = rogue_update(c.doc, {("jobs", JOB): b"not a record"})
    assert not b.doc.apply_remote(forged).accepted
    checked.clear()
    after_rebuild = b.doc.apply_remote(update)
    assert after_rebuild.accepted and not after_rebuild.added and update in checked
    # Our own local writes coming back from a relay are duplicates too.
    b.heartbeat()
    (own,) = b.doc.drain_local_updates()
    checked.clear()
    assert not b.doc.apply_remote(own).added and own not in checked


def test_the_seen_digests_are_bounded(monkeypatch):
    import crdt_state.document as document_module

    monkeypatch.setattr(document_module, "SEEN_UPDATES", 2)
    a, b, _c = cluster()
    updates = []
    for _ in range(4):
        a.heartbeat()
        updates += a.doc.drain_local_updates()
    for update in updates:
        assert b.doc.apply_remote(update).added
    assert len(b.doc._seen) == 2
    assert not b.doc.apply_remote(updates[0]).added  # forgotten: the full path, still a duplicate


def test_watchers_hear_every_visible_change_and_nothing_else():
    a, b, _c = cluster()
    heard = []
    b.doc.watch(lambda map_name, key: heard.append((map_name, key)))
    a.put("jobs", JOB, "job", {"x": 1})
    for update in a.doc.drain_local_updates():
        assert b.doc.apply_remote(update).accepted
        assert not b.doc.apply_remote(update).added  # a duplicate changes nothing: not heard again
    assert heard == [("jobs", JOB)]
    assert not b.doc.apply_remote(rogue_update(b.doc, {("jobs", "ef" * 32): b"not a record"})).accepted
    assert heard == [("jobs", JOB)]  # refused: nothing visible changed
    b.put("runs", f"{JOB}:{b.hex}", "run", {"state": "claimed"})
    b.doc.delete_local([("runs", f"{JOB}:{b.hex}")])
    assert heard[1:] == [("runs", f"{JOB}:{b.hex}")] * 2


def test_drained_updates_can_be_merged_into_one_that_peers_take_whole():
    a, b, _c = cluster()
    a.doc.merge_local_updates = True
    jobs = [f"{n:02x}" * 32 for n in range(5)]
    for n, key in enumerate(jobs):
        a.put("jobs", key, "job", {"n": n})
    a.put("jobs", jobs[0], "job", {"n": "rewritten"})
    (merged,) = a.doc.drain_local_updates()
    result = b.doc.apply_remote(merged)
    assert result.accepted and result.changed == frozenset(("jobs", key) for key in jobs)
    assert b.doc.get("jobs", jobs[0]).body == {"n": "rewritten"} and b.doc.get("jobs", jobs[4]).body == {
        "n": 4
    }
    assert not a.doc.apply_remote(merged).added  # our own merged update coming back is a duplicate
    a.heartbeat()
    (single,) = a.doc.drain_local_updates()  # one write: passed on as it is
    assert b.doc.apply_remote(single).accepted
