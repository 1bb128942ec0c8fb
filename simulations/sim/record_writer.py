"""A node record written the way Node.publish writes it, without a running Node.

Used where the simulation needs the records but not the node: the document-only heartbeat
run (heartbeat_doc.py) and the warm start (warm_start.py). Same fields as a simulated node's
record (its capabilities and static capacity, version "sim"), signed with the node's key and
written with the real ClusterDocument.put_local.
"""

from __future__ import annotations

from crdt_state.document import ClusterDocument
from crdt_state.records import DIRECT, NodeRecord, Openers
from daemon.cluster.node import static_capacity
from daemon.identity import Identity

from .world import CAPABILITIES, EPOCH


class RecordWriter:
    def __init__(self, identity: Identity, address: str, client_id: int, openers: Openers = DIRECT) -> None:
        self.identity = identity
        self.document = ClusterDocument(identity.node_id, client_id=client_id, openers=openers)
        self.address = address
        self.heartbeat = 0
        self.capabilities = CAPABILITIES.to_wire()
        self.capacity = static_capacity(CAPABILITIES).to_wire()

    def beat(self, now: float, incarnation: int = 1) -> list[bytes]:
        """Write the next heartbeat at simulated time `now`; returns the document updates."""
        self.heartbeat += 1
        record = NodeRecord(
            node_id=self.identity.node_id,
            public_key=self.identity.public_key,
            address=self.address,
            incarnation=incarnation,
            heartbeat=self.heartbeat,
            status="alive",
            capabilities=self.capabilities,
            capacity=self.capacity,
            version="sim",
            updated_ms=int((EPOCH + now) * 1000),
        )
        self.document.put_local("nodes", self.identity.node_hex, record.seal(self.identity.private_key))
        return self.document.drain_local_updates()
