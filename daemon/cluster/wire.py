"""The first byte of every payload a node sends over a Transport (pure; append-only).

A gossip payload is a msgpack array, whose first byte is never 0xc0-0xc5 (msgpack leaves
0xc1 unused and arrays start at 0x90/0xdc/0xdd); the bytes below mark every other kind of
payload. New kinds take the next free byte; a byte once given is never reused, so nodes of
different versions never read one kind of payload as another.
"""

from __future__ import annotations

NOTICE = b"\xc0"  # a node's own signed record, sent to it by a peer that holds a newer one
SIDE_REQUEST = b"\xc1"  # blob chunks and live log chunks between nodes (daemon/jobs/peer_requests.py)
PING = b"\xc2"  # SWIM probe: "are you this node?"
PING_REQ = b"\xc3"  # SWIM indirect probe: "ping it for me"
ACK = b"\xc4"  # probe answered
NACK = b"\xc5"  # indirect probe: no ack in time


def tag_of(payload: bytes) -> bytes:
    return payload[:1]
