"""Telling a node that we hold a newer record of it than the one it publishes (memberlist's
refutation, the other way round: here the peer that notices tells the node, which refutes).

Why the document alone is not enough: a node restarted with its key but without its state dir
(an operator restored node.key into a fresh state dir, or the disk with the document was lost)
starts again at incarnation 1 and writes its record before it has seen anything. Its write and
the records of its earlier life are concurrent writes of one map key, and the CRDT picks the
winner by client id. When the earlier life wins, the node sees it in its own document and moves
past it (node.py). When the new write wins, the earlier life's records are history the node
never sees, while every peer that held one keeps showing it (the stale rule in
crdt_state/document.py: a node record older than the one held is not shown), so to those peers
the node looks dead while it runs jobs, and their views differ from the views of peers that
never held the old record.

So a peer whose document reports a key as stale (ApplyResult.stale) sends that node the record
it shows instead: the node's own signed envelope, prefixed with NOTICE_PREFIX. A gossip payload
is always a msgpack array and a side request starts with 0xc1, so a payload starting with
msgpack's nil byte is neither. The node checks the signature (only its own key can have made
the record) and, if the record is newer than what it publishes, takes the next incarnation and
republishes at once. A lost notice costs nothing: the node's next heartbeat is stale there
again, and the peer tells it again. An old notice arriving late is older than what the node
publishes by then and is ignored.
"""

from __future__ import annotations

from crdt_state.records import NodeRecord, RecordError, open_node_record
from daemon.cluster.wire import NOTICE as NOTICE_PREFIX


class NoticeError(ValueError):
    """A notice that is not a valid signed node record."""


def encode_notice(envelope: bytes) -> bytes:
    return NOTICE_PREFIX + envelope


def is_notice(payload: bytes) -> bool:
    return payload[:1] == NOTICE_PREFIX


def decode_notice(payload: bytes) -> NodeRecord:
    """The verified node record a notice carries (signature, schema, signer owns the id)."""
    try:
        return open_node_record(payload[len(NOTICE_PREFIX) :])
    except RecordError as exc:
        raise NoticeError(f"record notice: {exc.reason}") from None


def outlives(record: NodeRecord, incarnation: int, heartbeat: int) -> bool:
    """True when `record` (of this node) is newer than the last one it wrote: it must move past it."""
    return record.freshness > (incarnation, heartbeat)
