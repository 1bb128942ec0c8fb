"""Bytes as a NetTransport peer writes them on a TCP stream, for tests that play a hostile or
replaying peer by hand: a length prefix, then a frame sealed with the cluster key around the
transport's inner header (kind, request id) and the body."""

import struct
import time

from daemon.transport.frames import seal
from daemon.transport.keyring import Keyring


def raw_frame(
    keyring: Keyring, kind: int, body: bytes, request_id: int = 0, now: float | None = None
) -> bytes:
    frame = seal(keyring, struct.pack(">BQ", kind, request_id) + body, time.time() if now is None else now)
    return struct.pack(">I", len(frame)) + frame
