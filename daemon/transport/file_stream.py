"""File streams: a range of one file sent over a connection of its own, piece after piece.

A peer that wants a whole blob asks for a stream rather than chunk after chunk. It opens a
fresh connection and sends HELLO, then STREAM (token | piece size | payload); the holder
answers with one REPLY (the handler's head, e.g. the blob's size) or FAILURE, then sends the
range as PIECE frames and one END frame, and closes. Both ends run this module in a worker
thread over a blocking socket: TCP's flow control is the window, the holder reads each piece
from the file straight into the plaintext it seals, and the receiver takes each frame with
one recv and decrypts it into a buffer it reuses, so memory stays at two pieces per side
and the trio loop goes on with gossip meanwhile.

    PIECE plaintext: kind (1) | sequence number (8) | token (16) | bytes of the file
    END   plaintext: kind (1) | sequence number (8) | token (16)

Every frame is sealed as all peer traffic is (daemon/transport/frames.py). The token is the
requester's 16 random bytes from its STREAM frame, which itself passes the replay guard: a
recorded stream replayed into another request carries the wrong token, and a piece dropped,
repeated or reordered carries the wrong sequence number; either ends the stream with
FrameError.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

from daemon.transport.frames import (
    OVERHEAD,
    PLAINTEXT_HEAD,
    FrameError,
    check_frame_size,
    open_stream_frame,
    seal_plaintext,
)
from daemon.transport.keyring import Keyring

STREAM, PIECE, END = 6, 7, 8  # frame kinds, after tcp.py's HELLO..FAILURE (1..5)
TOKEN_BYTES = 16
STREAM_PIECE = 1024 * 1024  # bytes of the file per frame, unless the requester asks for less
# A received piece stays valid while this many more are received (each into its own buffer),
# so the consumer may write one in another thread while the next ones arrive.
PIECE_BUFFERS = 3
_PIECE_HEAD = struct.Struct(f">BQ{TOKEN_BYTES}s")
_STREAM_REQUEST = struct.Struct(f">{TOKEN_BYTES}sI")
_LENGTH = struct.Struct(">I")


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
    return OVERHEAD + _PIECE_HEAD.size + piece


def set_socket_timeout(sock: socket.socket, seconds: float) -> None:
    """Blocking I/O that gives up after `seconds` without progress (SO_RCVTIMEO/SO_SNDTIMEO,
    so a recv with MSG_WAITALL still waits for the whole frame in one call)."""
    sock.setblocking(True)
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def send_file_range(
    sock: socket.socket,
    keyring: Keyring,
    clock: Callable[[], float],
    token: bytes,
    source: FileRange,
    piece: int,
    max_frame: int,
) -> int:
    """Send the range as PIECE frames and one END; returns the bytes put on the wire.
    OSError when the peer goes away, EOFError when the file is shorter than the range."""
    piece = max(1, min(piece, max_frame - frame_bytes(0)))
    head = PLAINTEXT_HEAD + _PIECE_HEAD.size
    plaintext = bytearray(head + min(piece, source.length))
    out = bytearray(_LENGTH.size + frame_bytes(min(piece, source.length)))
    view = memoryview(plaintext)
    sent = sequence = done = 0
    while True:
        want = min(piece, source.length - done)
        got = os.preadv(source.fd, [view[head : head + want]], source.offset + done) if want else 0
        if want and not got:
            raise EOFError(f"file ended {done:,} bytes into a {source.length:,}-byte range")
        _PIECE_HEAD.pack_into(plaintext, PLAINTEXT_HEAD, PIECE if got else END, sequence, token)
        frame = seal_plaintext(keyring, view[: head + got], clock(), out, _LENGTH.size, max_frame=max_frame)
        _LENGTH.pack_into(out, 0, len(frame) - _LENGTH.size)
        sock.sendall(frame)
        sent += len(frame)
        if not got:
            return sent
        sequence += 1
        done += got


class _BlockingFrames:
    """Length-prefixed frames from a blocking socket, after bytes already read (`leftover`)."""

    def __init__(self, sock: socket.socket, leftover: bytes, max_frame: int) -> None:
        self.sock = sock
        self.leftover = memoryview(leftover)
        self.max_frame = max_frame
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
        check_frame_size(size, min(self.max_frame, len(frame)))
        view = memoryview(frame)[:size]
        self._fill(view)
        return view


class PieceReceiver:
    """The pieces of one stream in order (iterate in a worker thread), each a view valid until
    PIECE_BUFFERS more are asked for; FrameError on a frame that is not the next piece or END of this
    stream. `received` counts the bytes taken off the socket."""

    def __init__(
        self,
        sock: socket.socket,
        keyring: Keyring,
        clock: Callable[[], float],
        window: float,
        token: bytes,
        piece: int,
        leftover: bytes,
        max_frame: int,
    ) -> None:
        self._frames = _BlockingFrames(sock, leftover, max_frame)
        self._keyring, self._clock, self._window = keyring, clock, window
        self._token, self._piece, self._max_frame = token, piece, max_frame

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
            payload = open_stream_frame(
                self._keyring,
                self._frames.read_into(frame),
                self._clock(),
                self._window,
                plaintexts[sequence % len(plaintexts)],
                max_frame=self._max_frame,
            )
            if len(payload) < _PIECE_HEAD.size:
                raise FrameError("stream frame too short for its kind, number and token")
            kind, number, their_token = _PIECE_HEAD.unpack_from(payload)
            if their_token != self._token:
                raise FrameError("stream frame of another stream")
            if number != sequence:
                raise FrameError(f"stream frame {number} where {sequence} was due")
            if kind == END:
                return
            if kind != PIECE:
                raise FrameError(f"unexpected frame kind {kind} in a stream")
            yield payload[_PIECE_HEAD.size :]
            sequence += 1
