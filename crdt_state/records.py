"""Typed records of the replicated document and the rule of who may write which key.

The document has six maps; every value is a signed envelope (signing.py) of the kind the map
holds. A value counts only when its signer owns the key:

  map         key                      kind       signer must be
  nodes       node id hex              node       that node (and the body names the same id)
  jobs        job id hex               job        any known node
  runs        f"{job_hex}:{node_hex}"  run        node_hex, and known
  cancels     job id hex               cancel     any known node
  suspicions  node id hex              suspicion  that node, and known (suspicion_record.py)
  grants      client public key hex    grant      any known node (grant_record.py)

"Known" means the nodes map holds a verified record for the signer. Every rule is a function
of the value and the (only ever growing) set of known nodes, never of which of two concurrent
values a replica happened to see first, so replicas that refuse an update now accept it once
they know the signer, and no two replicas can disagree forever. The one comparison with what
is held, node freshness, raises StaleRecord and the document keeps showing the newer record
rather than refusing (see document.py). Job, run and cancel bodies
are opaque dicts here; pack_manager/jobspec.py and jobstate.py give them a schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.grant_record import parse_grant
from crdt_state.signing import RecordError, node_id_of, open_record, seal_record
from crdt_state.suspicion_record import parse_suspicions

MAP_KINDS = {
    "nodes": "node",
    "jobs": "job",
    "runs": "run",
    "cancels": "cancel",
    "suspicions": "suspicion",
    "grants": "grant",
}
NODE_STATUSES = ("alive", "left")
MAX_INT = 2**63 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RUN_KEY = re.compile(r"([0-9a-f]{64}):([0-9a-f]{64})")


def _need_int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise RecordError(f"node record {key}: expected an integer in 0..{MAX_INT}")
    return value


def _need_text(body: Mapping[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise RecordError(f"node record {key}: expected text of at most {limit} characters")
    return value


def _need_bytes(body: Mapping[str, Any], key: str, size: int) -> bytes:
    value = body.get(key)
    if not isinstance(value, bytes) or len(value) != size:
        raise RecordError(f"node record {key}: expected {size} bytes")
    return value


def _need_dict(body: Mapping[str, Any], key: str) -> dict:
    value = body.get(key)
    if not isinstance(value, dict):
        raise RecordError(f"node record {key}: expected a map")
    return value


def check_address(address: str) -> None:
    """ "host:port" with a port in 1..65535; an IPv6 host goes in brackets."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise RecordError(f"address {address!r} is not host:port")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise RecordError(f"address {address!r}: an IPv6 host must be in brackets")


@dataclass(frozen=True)
class NodeRecord:
    node_id: bytes
    public_key: bytes
    address: str
    incarnation: int
    heartbeat: int
    status: str
    capabilities: dict = field(hash=False)
    capacity: dict = field(hash=False)
    version: str
    updated_ms: int

    @property
    def freshness(self) -> tuple[int, int]:
        # A restart bumps the incarnation, so its heartbeat counter starting again at 0 is newer.
        return (self.incarnation, self.heartbeat)

    @property
    def node_hex(self) -> str:
        return self.node_id.hex()

    def to_body(self) -> dict:
        body = {
            "node_id": self.node_id,
            "public_key": self.public_key,
            "address": self.address,
            "incarnation": self.incarnation,
            "heartbeat": self.heartbeat,
            "status": self.status,
            "capabilities": self.capabilities,
            "capacity": self.capacity,
            "version": self.version,
            "updated_ms": self.updated_ms,
        }
        NodeRecord.from_body(body)  # refuse to sign something no reader would accept
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "NodeRecord":
        if not isinstance(body, Mapping):
            raise RecordError("node record body must be a map")
        public_key = _need_bytes(body, "public_key", 32)
        node_id = _need_bytes(body, "node_id", 32)
        if node_id_of(public_key) != node_id:
            raise RecordError("node record node_id is not blake3 of its public key")
        address = _need_text(body, "address", 300)
        check_address(address)
        status = _need_text(body, "status", 16)
        if status not in NODE_STATUSES:
            raise RecordError(f"node record status {status!r} is not one of {', '.join(NODE_STATUSES)}")
        return cls(
            node_id=node_id,
            public_key=public_key,
            address=address,
            incarnation=_need_int(body, "incarnation"),
            heartbeat=_need_int(body, "heartbeat"),
            status=status,
            capabilities=_need_dict(body, "capabilities"),
            capacity=_need_dict(body, "capacity"),
            version=_need_text(body, "version", 64),
            updated_ms=_need_int(body, "updated_ms"),
        )

    def seal(self, private_key: Ed25519PrivateKey) -> bytes:
        return seal_record(private_key, "node", self.to_body())


class StaleRecord(RecordError):
    """A valid node record that is older than the one already held for that node."""


def _open_node(envelope: bytes) -> tuple[NodeRecord, dict]:
    signer, body = open_record(envelope, "node")
    record = NodeRecord.from_body(body)
    if record.node_id != signer:
        raise RecordError("node record is signed by a different node")
    return record, body


@dataclass(frozen=True)
class Openers:
    """How envelopes are opened (signature, msgpack, schema). Both are pure functions of the
    envelope's bytes, so a caller that sees the same envelopes many times may share their
    results through its own pair (the simulation does: simulations/sim/shared_verify.py)."""

    open_record: Callable[[bytes, str], tuple[bytes, dict]] = open_record
    open_node: Callable[[bytes], tuple[NodeRecord, dict]] = _open_node


DIRECT = Openers()


def open_node_record(envelope: bytes) -> NodeRecord:
    """Verify a nodes-map value on its own: signature, schema, and signer == record's node."""
    return _open_node(envelope)[0]


@dataclass(frozen=True)
class SignedEntry:
    """A verified value of any map: who signed it and what it says (node is set for nodes)."""

    map_name: str
    key: str
    signer_id: bytes
    body: dict = field(hash=False)
    envelope: bytes
    node: NodeRecord | None = None


def check_key_shape(map_name: str, key: str) -> None:
    if map_name not in MAP_KINDS:
        raise RecordError(f"unknown map {map_name!r}")
    if not isinstance(key, str):
        raise RecordError("keys are text")
    pattern = _RUN_KEY if map_name == "runs" else _HEX64
    if not pattern.fullmatch(key):
        raise RecordError(f"{map_name} key {key[:80]!r} is not in the form that map requires")


def verify_entry(
    map_name: str,
    key: str,
    envelope: bytes,
    known_nodes: Mapping[bytes, Any],
    held: SignedEntry | None = None,
    openers: Openers = DIRECT,
) -> SignedEntry:
    """Check one value against its key's ownership rule; `held` is what we had before."""
    check_key_shape(map_name, key)
    if map_name == "nodes":
        record, body = openers.open_node(envelope)
        if record.node_hex != key:
            raise RecordError(f"node record for {record.node_hex[:12]} stored under another node's key")
        if held is not None and held.node is not None and record.freshness < held.node.freshness:
            raise StaleRecord(
                f"node record for {key[:12]} is older {record.freshness} than the one held {held.node.freshness}"
            )
        return SignedEntry(map_name, key, record.node_id, body, bytes(envelope), record)
    signer, body = openers.open_record(envelope, MAP_KINDS[map_name])
    if signer not in known_nodes:
        raise RecordError(f"{map_name} entry {key[:12]} signed by unknown node {signer.hex()[:12]}")
    if map_name == "runs" and _RUN_KEY.fullmatch(key).group(2) != signer.hex():
        raise RecordError(f"run {key[:12]}... written by {signer.hex()[:12]}, not the node it names")
    if map_name == "suspicions":
        if key != signer.hex():
            raise RecordError(f"suspicions of {key[:12]} written by {signer.hex()[:12]}, not that node")
        parse_suspicions(body)
    if map_name == "grants":
        parse_grant(body)
    return SignedEntry(map_name, key, signer, body, bytes(envelope))
