"""Probe payloads (pure): a tag byte, then fixed fields; replies are ack or nack.

Gossip payloads are msgpack arrays, 0xc0 starts a record notice and 0xc1 a blob request
(msgpack never starts a value with these bytes), so probes take the next free ones:

    ping      0xc2 + target node id (32 B)                     "are you this node?"
    ping-req  0xc3 + target node id (32 B) + target address     "ping it for me"
    ack       0xc4 + the node id that answered (32 B)
    nack      0xc5                                              (ping-req: no ack in time)

A ping names the node it means so that a different process now at that address (a fresh
node reusing the port) does not vouch for the one we are probing.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt_state.records import check_address
from crdt_state.signing import RecordError
from daemon.cluster.wire import ACK, PING, PING_REQ

PROBE_TAGS = (PING, PING_REQ)
ID_SIZE = 32
MAX_ADDRESS = 300


class ProbeError(ValueError):
    """A probe payload that is not one of the shapes above."""


@dataclass(frozen=True)
class Ping:
    target: bytes


@dataclass(frozen=True)
class PingRequest:
    target: bytes
    address: str


def is_probe(payload: bytes) -> bool:
    return payload[:1] in PROBE_TAGS


def encode_ping(target: bytes) -> bytes:
    return PING + target


def encode_ping_request(target: bytes, address: str) -> bytes:
    return PING_REQ + target + address.encode()


def encode_ack(node_id: bytes) -> bytes:
    return ACK + node_id


def decode_probe(payload: bytes) -> Ping | PingRequest:
    tag, body = payload[:1], payload[1:]
    if tag == PING:
        if len(body) != ID_SIZE:
            raise ProbeError(f"ping of {len(payload)} bytes, expected {1 + ID_SIZE}")
        return Ping(bytes(body))
    if tag != PING_REQ:
        raise ProbeError(f"not a probe (tag {tag.hex() or 'none'})")
    if not ID_SIZE < len(body) <= ID_SIZE + MAX_ADDRESS:
        raise ProbeError(f"ping-req of {len(payload)} bytes does not hold a node id and an address")
    try:
        address = bytes(body[ID_SIZE:]).decode()
        check_address(address)
    except (UnicodeDecodeError, RecordError) as exc:
        raise ProbeError(f"ping-req address is not host:port ({type(exc).__name__})") from None
    return PingRequest(bytes(body[:ID_SIZE]), address)


def is_ack_from(reply: bytes, target: bytes) -> bool:
    """True when a reply is the ack of exactly this node."""
    return reply == ACK + target
