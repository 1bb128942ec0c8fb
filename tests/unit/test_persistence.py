"""DocumentStore: replay reproduces the document; torn tails and kill -9 lose nothing acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from crdt_nodes import FakeNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_state.document import ClusterDocument
from crdt_state.persistence import DocumentStore, StoreError
from crdt_state.sync import decode_state_vector

ENTRIES = [b"first", b"\x00" * 300, b"third entry"]


def test_appends_come_back_in_order(tmp_path):
    with DocumentStore(tmp_path) as store:
        for index, entry in enumerate(ENTRIES):
            store.append(entry, durable=index == 0)
        assert store.log_entries == 3
    with DocumentStore(tmp_path) as store:
        assert store.load() == ENTRIES
        assert store.dropped_bytes == 0


def test_snapshot_replaces_the_log(tmp_path):
    with DocumentStore(tmp_path) as store:
        store.append(b"old", durable=True)
        store.snapshot(b"full state")
        assert store.log_bytes == 0
        store.append(b"after", durable=False)
    with DocumentStore(tmp_path) as store:
        assert store.load() == [b"full state", b"after"]
    assert oct((tmp_path / "document" / "snapshot").stat().st_mode & 0o777) == "0o600"


def test_a_second_store_on_the_same_directory_is_refused(tmp_path):
    with DocumentStore(tmp_path):
        with pytest.raises(StoreError, match="in use"):
            DocumentStore(tmp_path)
    DocumentStore(tmp_path).close()  # released on close


def test_bad_appends_are_refused_and_write_nothing(tmp_path):
    with DocumentStore(tmp_path) as store:
        for bad in (b"", "text", None):
            with pytest.raises(StoreError):
                store.append(bad, durable=True)
        assert store.load() == []


def test_every_torn_tail_is_cut_back_to_the_last_whole_entry(tmp_path):
    with DocumentStore(tmp_path) as store:
        for entry in ENTRIES:
            store.append(entry, durable=True)
    log = tmp_path / "document" / "updates.log"
    whole = log.read_bytes()
    last_start = len(whole) - (12 + len(ENTRIES[-1]))
    for cut in range(last_start + 1, len(whole)):
        log.write_bytes(whole[:cut])
        with DocumentStore(tmp_path) as store:
            assert store.load() == ENTRIES[:-1]
            assert store.dropped_bytes == cut - last_start
            store.append(b"next", durable=True)
        with DocumentStore(tmp_path) as store:
            assert store.load() == ENTRIES[:-1] + [b"next"]


def test_a_damaged_entry_drops_it_and_what_follows(tmp_path):
    with DocumentStore(tmp_path) as store:
        for entry in ENTRIES:
            store.append(entry, durable=True)
    log = tmp_path / "document" / "updates.log"
    data = bytearray(log.read_bytes())
    data[12 + len(ENTRIES[0]) + 12 + 5] ^= 0xFF  # inside the second payload
    log.write_bytes(bytes(data))
    with DocumentStore(tmp_path) as store:
        assert store.load() == ENTRIES[:1]
        assert store.dropped_bytes == len(data) - (12 + len(ENTRIES[0]))


def test_a_damaged_snapshot_is_an_error_naming_the_file(tmp_path):
    with DocumentStore(tmp_path) as store:
        store.snapshot(b"state")
    path = tmp_path / "document" / "snapshot"
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    with DocumentStore(tmp_path) as store:
        with pytest.raises(StoreError, match="snapshot: damaged"):
            store.load()
    path.write_bytes(b"nonsense" * 10)
    with DocumentStore(tmp_path) as store:
        with pytest.raises(StoreError, match="not a formnet document snapshot"):
            store.load()


def test_a_leftover_snapshot_temporary_is_removed(tmp_path):
    (tmp_path / "document").mkdir()
    (tmp_path / "document" / "snapshot.123.tmp").write_bytes(b"half")
    with DocumentStore(tmp_path) as store:
        assert store.load() == []
    assert not (tmp_path / "document" / "snapshot.123.tmp").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(["beat0", "beat1", "job", "snapshot"]), min_size=1, max_size=25))
def test_replaying_the_store_reproduces_the_document(tmp_path_factory, steps):
    state_dir = tmp_path_factory.mktemp("store")
    a, b = FakeNode.create(21), FakeNode.create(22)
    a.heartbeat()
    b.heartbeat()
    with DocumentStore(state_dir) as store:
        for update in a.doc.drain_local_updates():
            store.append(update, durable=True)
        remote = b.doc.drain_local_updates()
        for update in remote:  # what a daemon does with a peer's accepted update
            assert a.doc.apply_remote(update).accepted
            store.append(update, durable=False)
        for number, step in enumerate(steps):
            if step == "beat0":
                a.heartbeat()
            elif step == "beat1":
                b.heartbeat()
                for update in b.doc.drain_local_updates():
                    assert a.doc.apply_remote(update).accepted
                    store.append(update, durable=False)
            elif step == "job":
                a.put("jobs", f"{number:064x}", "job", {"n": number})
            else:
                store.snapshot(a.doc.full_state())
            for update in a.doc.drain_local_updates():
                store.append(update, durable=True)
    with DocumentStore(state_dir) as store:
        restored = ClusterDocument.from_updates(store.load(), a.node_id)
    assert restored.node_records() == a.doc.node_records()
    assert {k: e.envelope for k, e in restored.items("jobs").items()} == {
        k: e.envelope for k, e in a.doc.items("jobs").items()
    }
    assert decode_state_vector(restored.state_vector()) == decode_state_vector(a.doc.state_vector())
    assert restored.ignored == []


WRITER = textwrap.dedent(
    """
    import sys
    from crdt_state.persistence import DocumentStore
    store = DocumentStore(sys.argv[1])
    number = 0
    while True:
        number += 1
        store.append(number.to_bytes(4, "big") * (1 + number % 700), durable=number % 3 == 0)
        if number % 3 == 0:
            print(number, flush=True)  # acknowledged: the durable append returned
        if number % 500 == 0:
            store.snapshot(b"snapshot up to " + str(number).encode())
    """
)


@pytest.mark.parametrize("acknowledged_before_kill", [40, 400, 1500])
def test_kill_9_at_any_moment_loses_no_acknowledged_append(tmp_path, acknowledged_before_kill):
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        acknowledged = 0
        while acknowledged < acknowledged_before_kill:
            acknowledged = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)  # mid-append, mid-snapshot, wherever it is
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    with DocumentStore(tmp_path) as store:
        loaded = store.load()
    snapshot_number = 0
    if loaded and loaded[0].startswith(b"snapshot up to "):
        snapshot_number = int(loaded.pop(0).split()[-1])
    numbers = [int.from_bytes(entry[:4], "big") for entry in loaded]
    for entry, number in zip(loaded, numbers):
        assert entry == number.to_bytes(4, "big") * (1 + number % 700)
    # The log continues the snapshot without gaps and reaches at least the last acknowledgement.
    # A kill between the snapshot's rename and the log's truncation leaves entries the snapshot
    # already holds at the head of the log: replaying them again is harmless (updates are
    # idempotent), so the log may start at or before the entry after the snapshot, never after.
    if numbers:
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert numbers[0] <= snapshot_number + 1
    assert max([snapshot_number, *numbers]) >= acknowledged
