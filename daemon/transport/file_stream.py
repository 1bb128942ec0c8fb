"""File streams: a range of one file sent over a connection of its own, piece after piece.

A peer that wants a whole blob asks for a stream rather than chunk after chunk. It opens a
fresh connection and sends HELLO, then STREAM (token | piece size | payload); the holder
answers with one REPLY (the handler's head, e.g. the blob's size) or FAILURE, then sends the
range as PIECE frames and one END frame, and closes. Both ends run this module in a worker
thread over a blocking socket: TCP's flow control is the window, the holder reads each piece
from the file straight into the plaintext it seals, and the receiver takes each frame with
one recv and decrypts it into buffers it reuses, so memory stays at a few pieces per side
and the trio loop goes on with gossip meanwhile.

The REPLY begins with the holder's half of the stream's key: the id of one of its cluster
keys and 16 random bytes. Both ends derive a key for this stream alone from that cluster key
(HKDF-SHA256, salted with the requester's 16 random bytes from STREAM and the holder's), and
the pieces are sealed under it with AES-256-GCM, the nonce being the piece's sequence number:

    piece frame = length (4) | AES-256-GCM(stream key, nonce = sequence number, kind | bytes)

A key used by one stream only makes counting nonces safe, and binds the pieces to the one
STREAM request, which itself passes the replay guard: a recorded stream replayed into another
request, or a piece dropped, repeated or reordered, fails authentication and ends the stream
with FrameError. AES-GCM runs several times faster than ChaCha20 where the CPU has AES
instructions, and is safe here because no nonce repeats under a stream's key; the cluster
key's own frames keep ChaCha20-Poly1305 with random nonces.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.transport.frames import FrameError
from daemon.transport.keyring import KEY_ID_BYTES, Keyring

STREAM, PIECE, END = 6, 7, 8  # frame kinds, after tcp.py's HELLO..FAILURE (1..5)
TOKEN_BYTES = 16
STREAM_PIECE = 1024 * 1024  # bytes of the file per frame, unless the requester asks for less
# A received piece stays valid while this many more are received (each into its own buffer),
# so the consumer may write one in another thread while the next ones arrive.
PIECE_BUFFERS = 3
_STREAM_REQUEST = struct.Struct(f">{TOKEN_BYTES}sI")
_PRELUDE = struct.Struct(f">{KEY_ID_BYTES}s{TOKEN_BYTES}s")  # the holder's key id and salt
_LENGTH = struct.Struct(">I")
_KIND = 1  # bytes of plaintext before a piece's data
_TAG = 16
_KEY_INFO = b"formnet file stream"


@dataclass
class FileRange:
    """What a stream handler answers: `head` for the REPLY, then `length` bytes of the open
    file `fd` from `offset`. The transport closes `fd` once sent."""

    head: bytes
    fd: int
    offset: int
    length: int


def stream_request(token: bytes, piece: int, payload: bytes) -> bytes:
    return _STREAM_REQUEST.pack(token, piece) + payload


def parse_stream_request(body: bytes) -> tuple[bytes, int, bytes]:
    """(token, piece size, payload) of a STREAM frame's body; FrameError when malformed."""
    if len(body) < _STREAM_REQUEST.size:
        raise FrameError("stream request too short for its token and piece size")
    token, piece = _STREAM_REQUEST.unpack_from(body)
    if piece < 1:
        raise FrameError("stream request asks for empty pieces")
    return token, piece, body[_STREAM_REQUEST.size :]


def frame_bytes(piece: int) -> int:
    """The largest frame of a stream with pieces of `piece` bytes."""
    return _KIND + piece + _TAG


def holder_prelude(keyring: Keyring, token: bytes) -> tuple[bytes, AESGCM]:
    """What the holder puts before its REPLY's head, and the stream's cipher."""
    prelude = _PRELUDE.pack(keyring.primary_id, os.urandom(TOKEN_BYTES))
    return prelude, _stream_cipher(keyring, token, prelude)


def open_prelude(keyring: Keyring, token: bytes, reply: bytes) -> tuple[AESGCM, bytes]:
    """The stream's cipher and the handler's head from a holder's REPLY; FrameError when the
    holder named a key this ring does not hold."""
    if len(reply) < _PRELUDE.size:
        raise FrameError("stream answer too short for its key id and salt")
    return _stream_cipher(keyring, token, reply[: _PRELUDE.size]), reply[_PRELUDE.size :]


def _stream_cipher(keyring: Keyring, token: bytes, prelude: bytes) -> AESGCM:
    key_id, salt = _PRELUDE.unpack(prelude)
    key = keyring.derive(key_id, token + salt, _KEY_INFO)
    if key is None:
        raise FrameError(f"stream under unknown key id {key_id.hex()[:8]}...")
    return AESGCM(key)


def _nonce(sequence: int) -> bytes:
    return sequence.to_bytes(12, "big")


def set_socket_timeout(sock: socket.socket, seconds: float) -> None:
    """Blocking I/O that gives up after `seconds` without progress (SO_RCVTIMEO/SO_SNDTIMEO,
    so a recv with MSG_WAITALL still waits for the whole frame in one call)."""
    sock.setblocking(True)
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def send_file_range(sock: socket.socket, cipher: AESGCM, source: FileRange, piece: int) -> int:
    """Send the range as PIECE frames and one END; returns the bytes put on the wire.
    OSError when the peer goes away, EOFError when the file is shorter than the range."""
    piece = max(1, min(piece, source.length))
    plaintext = bytearray(_KIND + piece)
    out = bytearray(_LENGTH.size + frame_bytes(piece))
    view, out_view = memoryview(plaintext), memoryview(out)
    sent = sequence = done = 0
    while True:
        want = min(piece, source.length - done)
        got = os.preadv(source.fd, [view[_KIND : _KIND + want]], source.offset + done) if want else 0
        if want and not got:
            raise EOFError(f"file ended {done:,} bytes into a {source.length:,}-byte range")
        plaintext[0] = PIECE if got else END
        size = _KIND + got + _TAG
        cipher.encrypt_into(
            _nonce(sequence), view[: _KIND + got], None, out_view[_LENGTH.size : _LENGTH.size + size]
        )
        _LENGTH.pack_into(out, 0, size)
        sock.sendall(out_view[: _LENGTH.size + size])
        sent += _LENGTH.size + size
        if not got:
            return sent
        sequence += 1
        done += got


class _BlockingFrames:
    """Length-prefixed frames from a blocking socket, after bytes already read (`leftover`)."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.leftover = memoryview(leftover)
        self.received = 0

    def _fill(self, view: memoryview) -> None:
        taken = min(len(view), len(self.leftover))
        view[:taken] = self.leftover[:taken]
        self.leftover = self.leftover[taken:]
        while taken < len(view):
            count = self.sock.recv_into(view[taken:], len(view) - taken, socket.MSG_WAITALL)
            if not count:
                raise FrameError(f"stream closed {taken} bytes into a frame")
            taken += count
            self.received += count

    def read_into(self, frame: bytearray) -> memoryview:
        prefix = bytearray(_LENGTH.size)
        self._fill(memoryview(prefix))
        (size,) = _LENGTH.unpack_from(prefix)
        if not _KIND + _TAG <= size <= len(frame):
            raise FrameError(
                f"stream frame of {size:,} bytes (this stream's are {_KIND + _TAG}-{len(frame):,})"
            )
        view = memoryview(frame)[:size]
        self._fill(view)
        return view


class PieceReceiver:
    """The pieces of one stream in order (iterate in a worker thread), each a view valid until
    PIECE_BUFFERS more are asked for; FrameError on a frame that is not the next piece or END
    of this stream. `received` counts the bytes taken off the socket."""

    def __init__(self, sock: socket.socket, cipher: AESGCM, piece: int, leftover: bytes) -> None:
        self._frames = _BlockingFrames(sock, leftover)
        self._cipher, self._piece = cipher, piece

    @property
    def received(self) -> int:
        return self._frames.received

    def __iter__(self) -> Iterator[memoryview]:
        frame = bytearray(frame_bytes(self._piece))
        plaintexts: list[bytearray] = []
        sequence = 0
        while True:
            if len(plaintexts) < PIECE_BUFFERS:
                plaintexts.append(bytearray(len(frame)))  # allocated as pieces come: a short stream takes one
            sealed = self._frames.read_into(frame)
            plaintext = memoryview(plaintexts[sequence % len(plaintexts)])[: len(sealed) - _TAG]
            try:
                self._cipher.decrypt_into(_nonce(sequence), sealed, None, plaintext)
            except InvalidTag:
                raise FrameError(f"stream frame {sequence}: authentication failed") from None
            if plaintext[0] == END:
                return
            if plaintext[0] != PIECE:
                raise FrameError(f"unexpected frame kind {plaintext[0]} in a stream")
            yield plaintext[_KIND:]
            sequence += 1
