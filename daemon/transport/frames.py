"""Sealed frames: the only bytes formd puts on the network (pure: time and nonces come in).

    frame     = version (1 byte) | key id (8) | nonce (12) | ciphertext
    ciphertext = ChaCha20-Poly1305(key, nonce, plaintext, associated data = the 21-byte header)
    plaintext  = sent-at timestamp (float64, seconds, sender's wall clock) | payload

The header travels in clear (the receiver needs the key id to pick a key) but is bound to
the ciphertext as associated data, so flipping a header bit fails authentication. A peer
without a key in our ring can neither read a frame nor make one we accept.

Replay: a recorded frame stays authentic forever, so the receiver refuses frames whose
timestamp is outside a window around its own clock (the clocks of cluster nodes are assumed
to agree within the window, default ±60 s) and remembers the nonces it accepted inside the
window (ReplayGuard). Memory stays bounded: when the guard is full it forgets its oldest
nonces and from then on refuses every frame stamped at or before the newest forgotten one,
so a replay is never accepted, at worst a very late genuine frame is refused.

Every refusal raises FrameError with a short reason meant for one log line.
"""

from __future__ import annotations

import heapq
import os
import struct
from typing import Sequence

from cryptography.exceptions import InvalidTag

from daemon.transport.keyring import KEY_ID_BYTES, Keyring

VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES
_TIMESTAMP = struct.Struct(">d")
OVERHEAD = HEADER_BYTES + _TIMESTAMP.size + TAG_BYTES

MAX_FRAME = 4 * 1024 * 1024
REPLAY_WINDOW = 60.0
REPLAY_MEMORY = 100_000  # ~15 MB at most; a LAN cluster uses a few thousand


class FrameError(ValueError):
    """A frame was refused; str(error) is the reason, fit for a log line."""


def describe_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def _over_limit(what: str, size: int, limit: int) -> str:
    shown, shown_limit = describe_size(size), describe_size(limit)
    if shown.split()[0].rstrip("0").rstrip(".") == shown_limit.split()[0] or shown == shown_limit:
        shown = f"{size} bytes"  # rounding would make it look equal to the limit
    return f"{what} of {shown} over the {shown_limit} limit"


def check_frame_size(size: int, max_frame: int = MAX_FRAME) -> None:
    """Refuse an announced frame size before a single body byte is read."""
    if size > max_frame:
        raise FrameError(_over_limit("frame", size, max_frame))
    if size < OVERHEAD:
        raise FrameError(f"truncated frame ({size} bytes, a frame has at least {OVERHEAD})")


def seal(
    keyring: Keyring, payload: bytes, now: float, *, max_frame: int = MAX_FRAME, nonce: bytes | None = None
) -> bytes:
    """Seal payload under the primary key, stamped with `now` (wall-clock seconds)."""
    return bytes(seal_parts(keyring, (payload,), now, max_frame=max_frame, nonce=nonce))


def seal_parts(
    keyring: Keyring,
    parts: Sequence[bytes],
    now: float,
    *,
    max_frame: int = MAX_FRAME,
    nonce: bytes | None = None,
    room: int = 0,
) -> bytearray:
    """seal() of the concatenated parts, after `room` spare bytes at the start of the one
    buffer returned (the transport writes its length prefix there): a large payload is
    copied once, and encrypted in place, on its way to the socket."""
    size = OVERHEAD + sum(len(part) for part in parts)
    if size > max_frame:
        raise FrameError(_over_limit("sealed payload", size, max_frame))
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    key_id, cipher = keyring.primary_cipher()
    header = bytes((VERSION,)) + key_id + nonce
    out = bytearray(room + size)
    out[room : room + HEADER_BYTES] = header
    plaintext = b"".join((_TIMESTAMP.pack(now), *parts))
    cipher.encrypt_into(nonce, plaintext, header, memoryview(out)[room + HEADER_BYTES :])
    return out


def open_frame(
    keyring: Keyring, frame: bytes, now: float, replay: "ReplayGuard", *, max_frame: int = MAX_FRAME
) -> bytes:
    """Authenticate, decrypt and replay-check one frame; return its payload or raise FrameError.

    Nothing is remembered unless the frame is accepted, so a forged frame cannot fill the
    replay guard.
    """
    return bytes(open_frame_view(keyring, frame, now, replay, max_frame=max_frame))


def open_frame_view(
    keyring: Keyring,
    frame: bytes | bytearray,
    now: float,
    replay: "ReplayGuard",
    *,
    max_frame: int = MAX_FRAME,
) -> memoryview:
    """open_frame() without copying: the payload as a view into the decrypted plaintext."""
    nonce, plaintext = _decrypt(keyring, frame, max_frame)
    (sent_at,) = _TIMESTAMP.unpack_from(plaintext)
    replay.check(nonce, sent_at, now)
    return plaintext[_TIMESTAMP.size :]


def _decrypt(keyring: Keyring, frame: bytes | bytearray, max_frame: int) -> tuple[bytes, memoryview]:
    check_frame_size(len(frame), max_frame)
    version = frame[0]
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this node speaks {VERSION})")
    key_id = bytes(frame[1 : 1 + KEY_ID_BYTES])
    cipher = keyring.cipher(key_id)
    if cipher is None:
        raise FrameError(f"unknown key id {key_id.hex()[:8]}...")
    header = bytes(frame[:HEADER_BYTES])
    nonce = header[1 + KEY_ID_BYTES :]
    size = len(frame) - HEADER_BYTES - TAG_BYTES
    plaintext = memoryview(bytearray(size))
    try:
        cipher.decrypt_into(nonce, memoryview(frame)[HEADER_BYTES:], header, plaintext)
    except InvalidTag:
        raise FrameError("authentication failed") from None
    return nonce, plaintext


def check_timestamp(sent_at: float, now: float, window: float) -> None:
    """Refuse a frame stamped outside ±`window` seconds of `now`."""
    if sent_at != sent_at:  # NaN compares false with everything; never accept it
        raise FrameError("frame timestamp is not a number")
    age = now - sent_at
    if age > window:
        raise FrameError(f"stale timestamp {age:.0f} s old (window ±{window:.0f} s)")
    if -age > window:
        raise FrameError(f"timestamp {-age:.0f} s in the future (window ±{window:.0f} s)")


class ReplayGuard:
    """Remembers the nonces of accepted frames for as long as their timestamps are in the window."""

    def __init__(self, window: float = REPLAY_WINDOW, capacity: int = REPLAY_MEMORY) -> None:
        if window <= 0 or capacity <= 0:
            raise ValueError("window and capacity must be positive")
        self.window = window
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[float, bytes]] = []  # heap of (timestamp, nonce)
        # Frames stamped at or before this were (or may have been) forgotten: refuse them.
        self._forgotten_up_to = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: bytes, sent_at: float, now: float) -> None:
        """Accept and remember (nonce, sent_at) or raise FrameError; `now` is the local clock."""
        check_timestamp(sent_at, now, self.window)
        self._expire(now)
        if nonce in self._seen:
            raise FrameError("replayed frame")
        if sent_at <= self._forgotten_up_to:
            raise FrameError("frame too old to tell from a replay (replay memory is full)")
        while len(self._seen) >= self.capacity:
            stamp, old = heapq.heappop(self._by_time)
            self._seen.discard(old)
            self._forgotten_up_to = max(self._forgotten_up_to, stamp)
        self._seen.add(nonce)
        heapq.heappush(self._by_time, (sent_at, nonce))

    def _expire(self, now: float) -> None:
        # Anything stamped before now - window is refused by the timestamp check anyway.
        horizon = now - self.window
        heap = self._by_time
        while heap and heap[0][0] < horizon:
            _, old = heapq.heappop(heap)
            self._seen.discard(old)
