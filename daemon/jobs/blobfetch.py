"""Blobs between nodes: serve chunks of held blobs, fetch missing ones from their holders.

Requests travel over the same sealed Transport as gossip. A blob request payload starts with
the byte 0xc1, which msgpack never uses, so it cannot be mistaken for a gossip payload:

    request  0xc1 + msgpack {"op": "blob", "digest": hex, "offset": int, "length": int, "raw": true}
    reply    0xc1 + msgpack {"size": total bytes, "length": n} + the n bytes   or a str reason (failure)

A request without "raw" gets {"size", "data": bytes} instead (both shapes are served); the
fetcher reads either. With "raw" the data follows the map as is, so the holder reads the
file straight into the reply and the fetcher writes it from the reply without a copy in
between.

A whole blob comes as a file stream where the transport and the holder have them
(daemon/transport/file_stream.py: a connection of its own, the blob's pieces one after
another, read, written and hashed by worker threads):

    stream   0xc1 + msgpack {"op": "blob", "digest": hex, "offset": int, "stream": true}
    head     msgpack {"size": total bytes}, then the blob from offset, piece after piece

Otherwise, and to finish a stream that broke off, the fetcher asks chunk by chunk with
FETCH_WINDOW requests outstanding (daemon/jobs/chunk_window.py). Either way it writes through
BlobWriter, which hashes every byte as it is written and installs the blob only when the
whole hashes to its digest. The partial file is always a prefix of the
blob, so a holder that fails or dies half-way is followed by the next holder from where it
stopped, and a restarted formd continues from the partial file too. A resumed fetch whose
whole does not match (the earlier holder sent bad bytes) starts over once from zero.
"""

from __future__ import annotations

import math
import os
import queue
import struct
import threading
from typing import Any, Iterable

import msgpack
import trio

from daemon.cluster.wire import SIDE_REQUEST as BLOB_PREFIX
from daemon.jobs.blobstore import BlobError, BlobStore, BlobWriter, DigestMismatch, check_digest
from daemon.jobs.chunk_window import ChunkWindow
from daemon.jobs.keyed_locks import KeyedLocks
from daemon.transport.file_stream import PIECE_BUFFERS, STREAM_PIECE
from daemon.transport.interface import Transport, TransportError

# Asked per request (and the most a holder serves), when frames allow. 3 MiB chunks cost a
# quarter less CPU per byte but grow every frame's buffers: formd's peak RSS then goes over 100 MiB.
FETCH_CHUNK = 1024 * 1024
FETCH_WINDOW = 4  # requests outstanding per fetch: at most 4 MiB in flight (8 while a batch is written)
FRAME_ROOM = 4096  # a chunk reply's bytes besides the data, and the sealed frame's own, with room to spare


def chunk_limit(max_frame: int) -> int:
    """The largest chunk whose reply fits a frame of `max_frame` bytes (never above FETCH_CHUNK)."""
    return max(1024, min(FETCH_CHUNK, max_frame - FRAME_ROOM))


class BlobRequestError(ValueError):
    """A malformed blob request (the peer's bug or an attack): logged as a bad message."""


class FetchError(Exception):
    """No holder could deliver the blob; the message lists why per holder."""


def is_blob_request(payload: bytes) -> bool:
    return payload[:1] == BLOB_PREFIX


def serve_blob_request(store: BlobStore, payload: bytes, max_data: int = FETCH_CHUNK) -> bytes | str:
    """A chunk of at most `max_data` bytes (chunk_limit of this node's frames), or a str reason
    for a fair refusal (not held); BlobRequestError when malformed."""
    try:
        request = msgpack.unpackb(payload[1:], raw=False)
        if not isinstance(request, dict) or request.get("op") != "blob":
            raise BlobRequestError("not a blob request")
        digest = check_digest(request.get("digest"))
        offset, length = request.get("offset"), request.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise BlobRequestError("blob request: offset and length must be integers >= 0")
        if not store.has(digest):
            return f"blob {digest[:12]} is not held here"
        return _chunk_reply(store, digest, offset, min(length, max_data), request.get("raw") is True)
    except BlobRequestError:
        raise
    except OSError as exc:
        return f"blob read failed: {exc.strerror or exc}"
    except (ValueError, BlobError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BlobRequestError(f"bad blob request: {type(exc).__name__}") from None


def _chunk_reply(store: BlobStore, digest: str, offset: int, length: int, raw: bool) -> bytearray:
    """The reply, with the chunk read from the file straight into its place (one copy)."""
    with store.open(digest) as blob:
        size = os.fstat(blob.fileno()).st_size
        length = max(0, min(length, size - offset))
        if raw:
            head = BLOB_PREFIX + msgpack.packb({"size": size, "length": length}, use_bin_type=True)
        else:
            # The map with empty data ends in that bin's 2-byte header: swap it for the real one.
            head = BLOB_PREFIX + msgpack.packb({"size": size, "data": b""}, use_bin_type=True)[:-2]
            head += _bin_header(length)
        reply = bytearray(len(head) + length)
        reply[: len(head)] = head
        got = os.preadv(blob.fileno(), [memoryview(reply)[len(head) :]], offset) if length else 0
    if got != length:
        raise BlobError(f"blob {digest[:12]} ended early at {offset + got:,} of {size:,} bytes")
    return reply


def _bin_header(length: int) -> bytes:
    """msgpack's bin 8/16/32 header (the C Packer has no method for it)."""
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


HEAD_BYTES = 64  # more than a raw reply's map ({"size", "length"}) ever takes


def _decode_reply(reply: bytes) -> tuple[int, bytes | memoryview]:
    """(blob size, chunk) from a raw reply (the chunk a view into the reply) or an older one."""
    if not is_blob_request(reply):
        raise BlobError("reply is not a blob chunk")
    view = memoryview(reply)[1:]
    head = msgpack.Unpacker(raw=False)
    head.feed(view[:HEAD_BYTES])
    try:
        value: Any = head.unpack()
    except msgpack.OutOfData:
        value = None  # a map holding its data (a reply to a request without "raw")
    if isinstance(value, dict) and "length" in value:
        data: bytes | memoryview = view[head.tell() :]
        if not isinstance(value.get("length"), int) or value["length"] != len(data):
            raise BlobError("reply's chunk length does not match its bytes")
    else:
        value = msgpack.unpackb(view, raw=False)
        data = value.get("data") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("size"), int)
        or not isinstance(data, bytes | memoryview)
    ):
        raise BlobError("reply is not a blob chunk")
    return value["size"], data


async def fetch_blob(
    store: BlobStore, transport: Transport, digest: str, holders: Iterable[str], timeout: float
) -> None:
    """Make `digest` local, from the first holder (address) that delivers it whole."""
    check_digest(digest)
    if store.has(digest):
        return
    failures = []
    for address in holders:
        try:
            await _fetch_from(store, transport, digest, address, timeout)
            return
        except (TransportError, BlobError, ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
            failures.append(f"{address}: {exc}")
    if store.has(digest):
        return
    raise FetchError(
        f"blob {digest[:12]}: no holder delivered it ({'; '.join(failures) or 'no holders known'})"
    )


async def _fetch_from(
    store: BlobStore, transport: Transport, digest: str, address: str, timeout: float
) -> None:
    start = _partial_size(store, digest)  # resume where an earlier holder stopped
    try:
        await _stream_from(store, transport, digest, address, start, timeout)
        return
    except DigestMismatch:
        if not start:
            raise  # the holder sent all of it, and other bytes: not asked again
        # The earlier holder's part was wrong (the partial file is gone now): once from zero.
    except (TransportError, BlobError):
        pass  # no stream from this holder, or it broke off: chunk by chunk from the partial file
    await _chunks_from(store, transport, digest, address, timeout)


async def _stream_from(
    store: BlobStore, transport: Transport, digest: str, address: str, start: int, timeout: float
) -> None:
    request = BLOB_PREFIX + msgpack.packb(
        {"op": "blob", "digest": digest, "offset": start, "stream": True}, use_bin_type=True
    )

    def consume(head: bytes, pieces: Iterable[memoryview]) -> None:
        size = _stream_size(head)
        writer = store.writer(digest, size)
        try:
            if writer.offset != start:
                raise BlobError(f"blob {digest[:12]}: the partial file did not fit the blob")
            with WritingThread(writer) as writing:
                for piece in pieces:
                    writing.write(piece)
            writer.finish()
        finally:
            writer.close()

    await transport.fetch_stream(address, request, STREAM_PIECE, timeout, consume)


class WritingThread:
    """Hashes and writes a stream's pieces in a thread of its own while the next pieces are
    received and decrypted: one piece waiting, one being written, so a piece is written
    before the receiver reuses its buffer (file_stream.PIECE_BUFFERS = 3). The writer's
    error comes back from the next write() or from leaving the block."""

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        self.error: BaseException | None = None
        self._pieces: queue.Queue[memoryview | None] = queue.Queue(maxsize=PIECE_BUFFERS - 2)
        self._thread = threading.Thread(target=self._run, name="blob-writer", daemon=True)

    def _run(self) -> None:
        while (piece := self._pieces.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(piece)
                except BaseException as exc:  # kept and raised in the receiving thread
                    self.error = exc

    def write(self, piece: memoryview) -> None:
        if self.error is not None:
            raise self.error
        self._pieces.put(piece)

    def __enter__(self) -> "WritingThread":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pieces.put(None)
        self._thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


def _partial_size(store: BlobStore, digest: str) -> int:
    partial = store.partial_path(digest)
    return partial.stat().st_size if partial.exists() else 0


def _stream_size(head: bytes) -> int:
    try:
        value = msgpack.unpackb(head, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("size"), int):
        raise BlobError("a stream's head names no blob size")
    return value["size"]


async def _chunks_from(
    store: BlobStore, transport: Transport, digest: str, address: str, timeout: float
) -> None:
    start = _partial_size(store, digest)  # resume where an earlier holder stopped
    chunk = chunk_limit(getattr(transport, "max_frame", FETCH_CHUNK + FRAME_ROOM))
    total, data = await _ask(transport, address, digest, start, chunk, timeout)
    writer = await trio.to_thread.run_sync(store.writer, digest, total)
    try:
        resumed = writer.offset > 0
        if writer.offset == start and data:  # (else the partial file did not fit this blob and went)
            await trio.to_thread.run_sync(writer.write, data)
        elif not data and writer.offset < total:
            raise BlobError(f"holder sent no data at offset {start}")
        await _stream(writer, transport, address, chunk, timeout)
        try:
            await trio.to_thread.run_sync(writer.finish)
        except BlobError:
            if not resumed:
                raise
            # The earlier holder's part was wrong (the partial file is gone now): once from zero.
            writer.close()
            await _chunks_from(store, transport, digest, address, timeout)
    finally:
        writer.close()


async def _stream(writer: BlobWriter, transport: Transport, address: str, chunk: int, timeout: float) -> None:
    """Fill the writer up to its size with FETCH_WINDOW requests outstanding."""
    window = ChunkWindow(writer.offset, writer.size, chunk, FETCH_WINDOW)
    replies_in, replies_out = trio.open_memory_channel[tuple[int, Any]](math.inf)
    failure: Exception | None = None

    async def ask(offset: int, length: int) -> None:
        try:
            reply: Any = await _ask(transport, address, writer.digest, offset, length, timeout)
        except (TransportError, BlobError, ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
            reply = exc
        replies_in.send_nowait((offset, reply))

    async with trio.open_nursery() as nursery:
        try:
            while not window.complete:
                for offset, length in window.to_ask():
                    nursery.start_soon(ask, offset, length)
                offset, reply = await replies_out.receive()
                if isinstance(reply, Exception):
                    raise reply
                size, data = reply
                if size != writer.size:
                    raise BlobError(f"holder changed its size for {writer.digest[:12]}")
                window.received(offset, data)
                ready = window.to_write()
                for offset, length in window.to_ask():  # the next requests go out while this writes
                    nursery.start_soon(ask, offset, length)
                if ready:
                    await trio.to_thread.run_sync(_write_all, writer, ready)
        except (TransportError, BlobError, ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
            failure = exc  # raised below, outside the nursery, as itself
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _write_all(writer: BlobWriter, chunks: list[bytes | memoryview]) -> None:
    for chunk in chunks:
        writer.write(chunk)


async def _ask(
    transport: Transport, address: str, digest: str, offset: int, length: int, timeout: float
) -> tuple[int, bytes]:
    request = BLOB_PREFIX + msgpack.packb(
        {"op": "blob", "digest": digest, "offset": offset, "length": length, "raw": True}, use_bin_type=True
    )
    return _decode_reply(await transport.request(address, request, timeout))


class BlobFetcher:
    """One fetch per digest at a time (they share its partial file); the job loop, the images and
    the control API all fetch through it, and retirement leaves a blob being fetched alone."""

    def __init__(self, store: BlobStore, transport: Transport, timeout: float) -> None:
        self.store = store
        self.transport = transport
        self.timeout = timeout
        self._fetching = KeyedLocks()

    def fetching(self, digest: str) -> bool:
        return self._fetching.busy(digest)

    async def fetch(self, digest: str, holders: list[str]) -> None:
        """Make a blob local; concurrent callers for one digest wait for the one fetch."""
        async with self._fetching.hold(digest):
            await fetch_blob(self.store, self.transport, digest, holders, self.timeout)
