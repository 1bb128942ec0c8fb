"""Figures for the replicated document (printed, never asserted):

  python -m crdt_state.measure [--nodes 100] [--rounds 1000] [--day-rewrites 86400]

- document size for N nodes each rewriting its own record R times (interleaved, through a
  hub document as a peer sees it), and for one node rewriting its record a whole day of
  1-per-second heartbeats through the full ClusterDocument path (signing included);
- growth per restart (each start writes with a fresh client id);
- cost of apply_remote for one heartbeat update into an N-node document, next to the raw
  pycrdt apply and the Ed25519 verification it contains;
- sync message sizes between converged peers, and store append/replay figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycrdt import Doc, Map

from crdt_state.document import MAP_NAMES, ClusterDocument
from crdt_state.persistence import DocumentStore
from crdt_state.records import NodeRecord
from crdt_state.signing import node_id_of, open_record, raw_public_key
from crdt_state.sync import SyncStep1, encode, handle

# Shaped like a real record: a few labels, 1 GPU, executors, capacity figures.
CAPABILITIES = {
    "cpu_millis": 16000,
    "memory_bytes": 64 * 2**30,
    "disk_bytes": 2 * 2**40,
    "executors": ["podman", "wasm"],
    "labels": {"zone": "a", "rack": "r12", "tier": "build"},
    "gpus": [{"model": "NVIDIA A10", "memory_bytes": 24 * 2**30, "index": 0}],
    "os": "linux",
    "arch": "x86_64",
    "kernel": "6.1.0-18-amd64",
}


class Writer:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public = raw_public_key(self.key)
        self.node_id = node_id_of(self.public)
        self.doc = ClusterDocument(self.node_id)
        self.incarnation = 1
        self.heartbeat = 0

    def envelope(self) -> bytes:
        self.heartbeat += 1
        record = NodeRecord(
            node_id=self.node_id,
            public_key=self.public,
            address="10.0.0.1:7946",
            incarnation=self.incarnation,
            heartbeat=self.heartbeat,
            status="alive",
            capabilities=CAPABILITIES,
            capacity={
                "cpu_millis": 9000 + self.heartbeat % 1000,
                "memory_bytes": 2**35 + self.heartbeat,
                "disk_bytes": 2**40,
                "gpus": [{"index": 0, "memory_free_bytes": 2**34}],
            },
            version="0.1.0",
            updated_ms=1_700_000_000_000 + self.heartbeat * 1000,
        )
        return record.seal(self.key)

    def beat(self) -> list[bytes]:
        self.doc.put_local("nodes", self.node_id.hex(), self.envelope())
        return self.doc.drain_local_updates()


def interleaved_size(nodes: int, rounds: int, record_size: int) -> int:
    """N writers each rewriting one key R times, as a hub replica accumulates it (raw pycrdt:
    the document layer stores exactly these bytes)."""
    writers = [Doc({name: Map() for name in MAP_NAMES}) for _ in range(nodes)]
    hub = Doc({name: Map() for name in MAP_NAMES})
    value = os.urandom(record_size)
    for _ in range(rounds):
        for index, writer in enumerate(writers):
            before = writer.get_state()
            writer["nodes"][f"{index:064x}"] = value
            hub.apply_update(writer.get_update(before))
    return len(hub.get_update())


def day_of_heartbeats(rewrites: int) -> tuple[int, int, float]:
    writer = Writer()
    peer = ClusterDocument()
    started = time.perf_counter()
    first = None
    for number in range(rewrites):
        for update in writer.beat():
            peer.apply_remote(update)
        if number == 0:
            first = len(peer.full_state())
    return first, len(peer.full_state()), time.perf_counter() - started


def restart_growth(restarts: int) -> tuple[int, int]:
    writer = Writer()
    peer = ClusterDocument()
    for update in writer.beat():
        peer.apply_remote(update)
    before = len(peer.full_state())
    for _ in range(restarts):
        # A restart: the store is replayed into a new document with a fresh client id.
        writer.doc = ClusterDocument.from_updates([writer.doc.full_state()], writer.node_id)
        writer.incarnation += 1
        writer.heartbeat = 0
        for _ in range(10):
            for update in writer.beat():
                peer.apply_remote(update)
    return before, len(peer.full_state())


def apply_costs(nodes: int, samples: int) -> dict[str, float]:
    writers = [Writer() for _ in range(nodes)]
    receiver = ClusterDocument()
    for writer in writers:
        for update in writer.beat():
            receiver.apply_remote(update)
    raw = Doc({name: Map() for name in MAP_NAMES})
    raw.apply_update(receiver.full_state())
    timings: dict[str, list[float]] = {"apply_remote": [], "raw pycrdt apply": [], "ed25519 verify": []}
    for number in range(samples):
        writer = writers[number % nodes]
        (update,) = writer.beat()
        started = time.perf_counter()
        result = raw.apply_update(update)
        timings["raw pycrdt apply"].append(time.perf_counter() - started)
        started = time.perf_counter()
        result = receiver.apply_remote(update)
        timings["apply_remote"].append(time.perf_counter() - started)
        assert result.accepted
        envelope = receiver.get("nodes", writer.node_id.hex()).envelope
        started = time.perf_counter()
        open_record(envelope, "node")
        timings["ed25519 verify"].append(time.perf_counter() - started)
    figures = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
    figures["document bytes"] = len(receiver.full_state())
    figures["heartbeat update bytes"] = len(update)
    figures["record envelope bytes"] = len(envelope)
    # A forged update is refused and the shadow rebuilt: the cost of a refusal.
    forged = bytearray(update)
    forged[-20] ^= 1
    started = time.perf_counter()
    receiver.apply_remote(bytes(forged))
    figures["refusal (incl. shadow rebuild)"] = (time.perf_counter() - started) * 1e6
    # Sync between converged peers.
    twin = ClusterDocument.from_updates([receiver.full_state()])
    figures["step1 bytes"] = len(encode(SyncStep1(twin.state_vector())))
    replies = handle(receiver, SyncStep1(twin.state_vector()))
    figures["step2 bytes when in step"] = sum(len(encode(reply)) for reply in replies)
    return figures


def store_figures(updates: int) -> dict[str, float]:
    writer = Writer()
    with tempfile.TemporaryDirectory() as directory:
        with DocumentStore(Path(directory)) as store:
            started = time.perf_counter()
            for _ in range(updates):
                for update in writer.beat():
                    store.append(update, durable=False)
            append_seconds = time.perf_counter() - started
            log_bytes = store.log_bytes
            started = time.perf_counter()
            for _ in range(50):
                store.append(writer.beat()[0], durable=True)
            fsync_append = (time.perf_counter() - started) / 50
        with DocumentStore(Path(directory)) as store:
            started = time.perf_counter()
            restored = ClusterDocument.from_updates(store.load(), writer.node_id)
            replay_seconds = time.perf_counter() - started
        assert restored.get("nodes", writer.node_id.hex()).node.heartbeat == writer.heartbeat
        assert not restored.ignored
    return {
        "log bytes per heartbeat": log_bytes / updates,
        "beat+append (non-durable) us": append_seconds / updates * 1e6,
        "durable append (fsync) ms": fsync_append * 1e3,
        f"replay of {updates} logged updates ms": replay_seconds * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--day-rewrites", type=int, default=86400)
    args = parser.parse_args()
    envelope_size = len(Writer().envelope())
    print(f"record envelope: {envelope_size} bytes")
    for rounds in (1, 10, args.rounds):
        size = interleaved_size(args.nodes, rounds, envelope_size)
        print(f"{args.nodes} nodes x {rounds} rewrites each (interleaved): document {size:,} bytes")
    first, last, seconds = day_of_heartbeats(args.day_rewrites)
    print(
        f"1 node x {args.day_rewrites} signed heartbeats via ClusterDocument: {first:,} -> {last:,} bytes "
        f"({(last - first) / max(args.day_rewrites - 1, 1):.4f} B/rewrite, {seconds:.1f} s)"
    )
    before, after = restart_growth(50)
    print(
        f"50 restarts x 10 heartbeats: {before:,} -> {after:,} bytes ({(after - before) / 50:.1f} B/restart)"
    )
    for name, value in apply_costs(args.nodes, 500).items():
        unit = "" if "bytes" in name else " us (median)" if "refusal" not in name else " us"
        print(f"{args.nodes}-node document, {name}: {value:,.0f}{unit}")
    for name, value in store_figures(5000).items():
        print(f"store: {name}: {value:,.1f}")


if __name__ == "__main__":
    main()
