"""Documents of in-process nodes for the crdt_state tests: nodes with real Ed25519 keys, a small
cluster of them that exchanges updates, and a 'rogue' that writes raw pycrdt updates the way a
cluster member with a bad daemon could."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycrdt import Doc, Map

from crdt_state.document import MAP_NAMES, ClusterDocument
from crdt_state.records import NodeRecord
from crdt_state.signing import node_id_of, raw_public_key, seal_record


@dataclass
class FakeNode:
    """A node identity plus its document; `heartbeat` writes a fresh record."""

    key: Ed25519PrivateKey
    doc: ClusterDocument
    incarnation: int = 1
    beats: int = 0
    labels: tuple = ()

    @classmethod
    def create(cls, seed: int | None = None) -> "FakeNode":
        key = (
            Ed25519PrivateKey.from_private_bytes(bytes([seed % 256]) * 32)
            if seed is not None
            else Ed25519PrivateKey.generate()
        )
        return cls(key=key, doc=ClusterDocument(node_id_of(raw_public_key(key))))

    @property
    def node_id(self) -> bytes:
        return node_id_of(raw_public_key(self.key))

    @property
    def hex(self) -> str:
        return self.node_id.hex()

    def record(self, heartbeat: int | None = None, **changes: Any) -> NodeRecord:
        base = NodeRecord(
            node_id=self.node_id,
            public_key=raw_public_key(self.key),
            address="127.0.0.1:7946",
            incarnation=self.incarnation,
            heartbeat=self.beats if heartbeat is None else heartbeat,
            status="alive",
            capabilities={"cpu": 4000, "labels": dict(self.labels)},
            capacity={"cpu": 3000},
            version="0.1.0",
            updated_ms=1_700_000_000_000,
        )
        return replace(base, **changes)

    def heartbeat(self, **changes: Any) -> bytes:
        self.beats += 1
        envelope = self.record(**changes).seal(self.key)
        self.doc.put_local("nodes", self.hex, envelope)
        return envelope

    def put(self, map_name: str, key: str, kind: str, body: dict) -> bytes:
        envelope = seal_record(self.key, kind, body)
        self.doc.put_local(map_name, key, envelope)
        return envelope


def rogue_update(victim: ClusterDocument, writes: dict[tuple[str, str], Any], deletes=(), roots=()) -> bytes:
    """An update made on a copy of `victim`'s state that writes/deletes raw values, bypassing
    every check, as a member running a modified daemon could send."""
    rogue = Doc({name: Map() for name in MAP_NAMES})
    rogue.apply_update(victim.full_state())
    before = rogue.get_state()
    for (map_name, key), value in writes.items():
        rogue[map_name][key] = value
    for map_name, key in deletes:
        del rogue[map_name][key]
    for name in roots:
        rogue[name] = Map({"x": b"1"})
    return rogue.get_update(before)


def snapshot_view(doc: ClusterDocument) -> tuple:
    """Everything a reader can see, for 'nothing changed' comparisons."""
    return (
        {node_id: record for node_id, record in doc.node_records().items()},
        {name: {k: e.envelope for k, e in doc.items(name).items()} for name in MAP_NAMES},
        doc.full_state(),
    )


def exchange(*nodes: FakeNode) -> None:
    """Hand every node's pending local updates to every other node; all must be accepted."""
    for sender in nodes:
        for update in sender.doc.drain_local_updates():
            for receiver in nodes:
                if receiver is not sender:
                    result = receiver.doc.apply_remote(update)
                    assert result.accepted, result.reason


def cluster(count: int = 3) -> list[FakeNode]:
    nodes = [FakeNode.create() for _ in range(count)]
    for node in nodes:
        node.heartbeat()
    exchange(*nodes)
    return nodes
