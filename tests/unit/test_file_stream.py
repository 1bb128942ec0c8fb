"""File streams between two NetTransports on 127.0.0.1 (daemon/transport/file_stream.py) and
blob fetches over them: whole ranges, refusals, broken and hostile streams, cancellation.

The fail_after guards only stop a broken build from hanging CI; nothing here asserts speed.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from contextlib import contextmanager

import msgpack
import pytest
import trio
from blake3 import blake3
from tcp_frames import raw_frame

from daemon.jobs.blobfetch import FetchError, WritingThread, fetch_blob
from daemon.jobs.blobstore import BlobError, BlobStore
from daemon.jobs.peer_requests import LiveLogs, PeerRequests
from daemon.transport.file_stream import (
    STREAM,
    FileRange,
    PieceReceiver,
    holder_prelude,
    open_prelude,
    send_file_range,
    stream_request,
)
from daemon.transport.frames import FrameError
from daemon.transport.interface import TransportError
from daemon.transport.keyring import Keyring
from daemon.transport.tcp import HELLO, REQUEST, NetTransport

GUARD = 30
DATA = os.urandom(5 * 1024 * 1024 + 4321)


class Chunks:
    """A side-request handler that counts the chunk requests it is asked."""

    def __init__(self, requests: PeerRequests) -> None:
        self.requests = requests
        self.asked = 0

    async def __call__(self, sender: str, payload: bytes):
        self.asked += 1
        return self.requests.serve(payload)


async def start(nursery, keyring, handler=None, files=None, drops=None) -> NetTransport:
    transport = NetTransport(keyring, "127.0.0.1:0", on_drop=drops)
    if files is not None:
        transport.serve_files(files)

    async def no_requests(sender, payload):
        return None

    await nursery.start(transport.serve, handler or no_requests)
    return transport


def file_of(tmp_path, data: bytes) -> int:
    (tmp_path / "file").write_bytes(data)
    return os.open(tmp_path / "file", os.O_RDONLY)


def collect(head: bytes, pieces) -> tuple[bytes, bytes, int]:
    got, count = bytearray(), 0
    for piece in pieces:
        got += piece
        count += 1
    return head, bytes(got), count


async def test_a_range_of_a_file_arrives_whole_in_pieces(tmp_path):
    ring = Keyring.generate()
    asked = []

    async def files(sender, payload):
        asked.append((sender, payload))
        return FileRange(b"head", file_of(tmp_path, DATA), 1000, len(DATA) - 1000)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            holder = await start(nursery, ring, files=files)
            fetcher = await start(nursery, ring)
            head, got, pieces = await fetcher.fetch_stream(
                holder.local_address, b"which?", 1 << 20, GUARD, collect
            )
            nursery.cancel_scope.cancel()
    assert (head, got, pieces) == (b"head", DATA[1000:], 6)
    assert asked == [(fetcher.local_address, b"which?")]
    assert len(DATA) - 1000 < fetcher.bytes_received < len(DATA)


async def test_refusals_and_holders_without_streams_are_transport_errors(tmp_path):
    ring = Keyring.generate()

    async def refuse(sender, payload):
        return "not held here"

    async def buggy(sender, payload):
        raise RuntimeError("bug")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            refusing = await start(nursery, ring, files=refuse)
            failing = await start(nursery, ring, files=buggy)
            plain = await start(nursery, ring)
            fetcher = await start(nursery, ring)
            reasons = []
            for holder in (refusing, failing, plain):
                with pytest.raises(TransportError) as caught:
                    await fetcher.fetch_stream(holder.local_address, b"x", 1 << 20, GUARD, collect)
                reasons.append(str(caught.value))
            nursery.cancel_scope.cancel()
    assert reasons == [
        f"{refusing.local_address} did not stream: not held here",
        f"{failing.local_address} did not stream: handler failed: RuntimeError",
        f"{plain.local_address} did not stream: files are not streamed here",
    ]


async def test_a_file_shorter_than_its_range_breaks_the_stream_and_the_holder_serves_on(tmp_path):
    ring = Keyring.generate()

    async def files(sender, payload):
        return FileRange(b"", file_of(tmp_path, DATA), 0, len(DATA) + 10)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            holder = await start(nursery, ring, files=files)
            fetcher = await start(nursery, ring)
            with pytest.raises(TransportError, match="broke: stream closed"):
                await fetcher.fetch_stream(holder.local_address, b"x", 1 << 20, GUARD, collect)
            with pytest.raises(TransportError, match="broke: stream closed"):
                await fetcher.fetch_stream(holder.local_address, b"x", 1 << 20, GUARD, collect)
            nursery.cancel_scope.cancel()


async def test_a_stream_request_after_other_requests_is_dropped(tmp_path):
    ring = Keyring.generate()
    reasons = []

    async def files(sender, payload):
        return FileRange(b"", file_of(tmp_path, DATA), 0, 10)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            holder = await start(
                nursery, ring, files=files, drops=lambda address, reason: reasons.append(reason)
            )
            stream = await trio.open_tcp_stream("127.0.0.1", int(holder.local_address.rsplit(":", 1)[1]))
            await stream.send_all(raw_frame(ring, HELLO, b"127.0.0.1:1"))
            await stream.send_all(raw_frame(ring, REQUEST, b"first", request_id=1))
            await stream.send_all(raw_frame(ring, STREAM, stream_request(os.urandom(16), 1024, b"x")))
            while await stream.receive_some(65536):
                pass  # read until the holder closes the connection
            nursery.cancel_scope.cancel()
    assert reasons == ["a stream request must come first on its connection"]


async def test_cancelling_a_fetch_stops_its_thread_and_the_holder_serves_on(tmp_path):
    ring = Keyring.generate()
    big = os.urandom(64 * 1024 * 1024)

    async def files(sender, payload):
        return FileRange(b"", file_of(tmp_path, big), 0, len(big))

    pieces_taken = []

    def slow(head, pieces):
        for piece in pieces:
            pieces_taken.append(len(piece))
            time.sleep(0.05)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            holder = await start(nursery, ring, files=files)
            fetcher = await start(nursery, ring)
            with trio.move_on_after(0.5) as scope:
                await fetcher.fetch_stream(holder.local_address, b"x", 1 << 20, GUARD, slow)
            assert scope.cancelled_caught
            taken = len(pieces_taken)
            _, got, _ = await fetcher.fetch_stream(holder.local_address, b"x", 1 << 20, GUARD, collect)
            nursery.cancel_scope.cancel()
    assert 0 < taken < 64
    assert len(pieces_taken) == taken  # the cancelled consumer took nothing more
    assert got == big


async def test_a_holder_that_stops_mid_stream_ends_its_thread_at_once(tmp_path):
    ring = Keyring.generate()
    big = os.urandom(64 * 1024 * 1024)
    served: list[int] = []

    async def files(sender, payload):
        served.append(file_of(tmp_path, big))
        return FileRange(b"", served[-1], 0, len(big))

    release = threading.Event()

    def stalled(head, pieces):
        next(iter(pieces))
        release.wait(GUARD)  # takes no more: the holder's writes block on a full socket
        return collect(head, pieces)

    def closed(fd: int) -> bool:
        try:
            os.fstat(fd)
            return False
        except OSError:
            return True

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            holder_scope = trio.CancelScope()
            # Writes time out after GUARD: only the shutdown can end the thread sooner.
            holder = NetTransport(ring, "127.0.0.1:0", write_timeout=GUARD)
            holder.serve_files(files)

            async def run_holder(task_status=trio.TASK_STATUS_IGNORED):
                with holder_scope:
                    await holder.serve(lambda sender, payload: None, task_status=task_status)

            await nursery.start(run_holder)
            fetcher = await start(nursery, ring)
            outcome_of_fetch = []

            async def fetch():
                try:
                    await fetcher.fetch_stream(holder.local_address, b"x", 1 << 20, GUARD, stalled)
                    outcome_of_fetch.append("whole")
                except TransportError as exc:
                    outcome_of_fetch.append(str(exc))

            nursery.start_soon(fetch)
            while not served:
                await trio.sleep(0.01)
            await trio.sleep(0.5)  # the holder's buffers fill
            holder_scope.cancel()
            while not closed(served[0]):  # the thread closes it: at its write timeout (GUARD) unless shut
                await trio.sleep(0.01)
            release.set()
            while not outcome_of_fetch:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert outcome_of_fetch != ["whole"]  # the fetcher learns the stream broke


def _frames_of_a_stream(tmp_path, ring: Keyring, token: bytes) -> tuple[bytes, list[bytes]]:
    """The holder's prelude and the frames send_file_range writes for DATA[:3 MiB] in 1 MiB
    pieces, split apart."""
    left, right = socket.socketpair()
    source = FileRange(b"", file_of(tmp_path, DATA), 0, 3 * 1024 * 1024)
    prelude, cipher = holder_prelude(ring, token)

    def send() -> None:
        send_file_range(left, cipher, source, 1 << 20)
        left.close()  # the reader below reads up to this end

    sender = threading.Thread(target=send)
    sender.start()
    wire = bytearray()
    while data := right.recv(1 << 20):
        wire += data
    sender.join()
    right.close()
    os.close(source.fd)
    frames, offset = [], 0
    while offset < len(wire):
        (size,) = struct.unpack_from(">I", wire, offset)
        frames.append(bytes(wire[offset : offset + 4 + size]))
        offset += 4 + size
    return prelude, frames


@contextmanager
def fed_with(frames: list[bytes]):
    """The reading end of a socket pair a thread writes `frames` into, then closes."""
    left, right = socket.socketpair()

    def write() -> None:
        try:
            left.sendall(b"".join(frames))
        except OSError:
            pass  # the receiver stopped reading at a bad frame
        left.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield right
    finally:
        right.close()
        writer.join()


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda frames: frames, None),
        (lambda frames: frames[1:], "stream frame 0: authentication failed"),
        (lambda frames: [frames[0], frames[0], *frames[1:]], "stream frame 1: authentication failed"),
        (lambda frames: frames[:2] + frames[3:], "stream frame 2: authentication failed"),
        (lambda frames: frames[:-1], "stream closed 0 bytes into a frame"),
        (lambda frames: [frames[0][:-1] + bytes([frames[0][-1] ^ 1]), *frames[1:]], "authentication failed"),
        (lambda frames: [struct.pack(">I", 9 << 20), *frames], "stream frame of 9,437,184 bytes"),
    ],
)
def test_pieces_out_of_place_tampered_or_missing_end_the_stream(tmp_path, tamper, reason):
    ring, token = Keyring.generate(), os.urandom(16)
    prelude, frames = _frames_of_a_stream(tmp_path, ring, token)
    cipher, head = open_prelude(ring, token, prelude + b"head")
    assert head == b"head"
    with fed_with(tamper(frames)) as sock:
        receiver = PieceReceiver(sock, cipher, 1 << 20, b"")
        if reason is None:
            assert b"".join(bytes(piece) for piece in receiver) == DATA[: 3 * 1024 * 1024]
        else:
            with pytest.raises(FrameError, match=reason):
                for _ in receiver:
                    pass


def test_a_stream_of_another_request_or_under_another_key_is_refused(tmp_path):
    ring = Keyring.generate()
    prelude, frames = _frames_of_a_stream(tmp_path, ring, b"A" * 16)
    cipher, _ = open_prelude(ring, b"B" * 16, prelude)  # the key another request derives
    with fed_with(frames) as sock, pytest.raises(FrameError, match="stream frame 0: authentication failed"):
        next(iter(PieceReceiver(sock, cipher, 1 << 20, b"")))
    with pytest.raises(FrameError, match="stream under unknown key id"):
        open_prelude(Keyring.generate(), b"A" * 16, prelude)
    with pytest.raises(FrameError, match="too short"):
        open_prelude(ring, b"A" * 16, prelude[:10])


async def test_blobs_come_by_stream_resume_from_a_partial_file_and_a_lying_holder_is_refused_once(tmp_path):
    ring = Keyring.generate()
    source = BlobStore(tmp_path / "source")
    digest = source.put_bytes(DATA)
    liar = BlobStore(tmp_path / "liar")
    liar_digest = liar.put_bytes(b"not the same bytes")
    # The liar holds other bytes under the name of DATA's digest.
    liar.path(digest).parent.mkdir(exist_ok=True)
    os.replace(liar.path(liar_digest), liar.path(digest))
    mine = BlobStore(tmp_path / "mine")
    mine.partial_path(digest).write_bytes(DATA[:1234567])  # an earlier fetch stopped here
    honest_requests = PeerRequests(source, LiveLogs())
    lying_requests = PeerRequests(liar, LiveLogs())
    honest_chunks, lying_chunks = Chunks(honest_requests), Chunks(lying_requests)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            honest = await start(nursery, ring, honest_chunks, honest_requests.open_stream)
            lying = await start(nursery, ring, lying_chunks, lying_requests.open_stream)
            fetcher = await start(nursery, ring)
            await fetch_blob(mine, fetcher, digest, [honest.local_address], GUARD)
            other = BlobStore(tmp_path / "other")
            with pytest.raises(FetchError, match="does not match its digest"):
                await fetch_blob(other, fetcher, digest, [lying.local_address], GUARD)
            nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == DATA
    assert honest_chunks.asked == 0  # all of it came by the stream, from the partial file's end
    assert fetcher.bytes_received < len(DATA) - 1234567 + 64 * 1024
    assert not other.has(digest) and list((tmp_path / "other" / "tmp").iterdir()) == []
    assert lying_chunks.asked == 0  # a holder whose whole stream was other bytes is not asked again
    assert blake3(DATA).hexdigest() == digest


async def test_a_stream_request_that_is_not_a_blob_stream_is_refused(tmp_path):
    requests = PeerRequests(BlobStore(tmp_path), LiveLogs())
    bad = [
        b"garbage",
        b"\xc1" + msgpack.packb({"op": "blob", "digest": "a" * 64, "offset": 0}),
        b"\xc1" + msgpack.packb({"op": "blob", "digest": 5, "offset": 0, "stream": True}),
        b"\xc1" + msgpack.packb({"op": "blob", "digest": "a" * 64, "offset": -1, "stream": True}),
    ]
    assert [await requests.open_stream("peer", payload) for payload in bad] == [
        "bad stream request: not a blob stream",
        "bad stream request: not a blob stream",
        "bad stream request: digest and offset >= 0 required",
        "bad stream request: digest and offset >= 0 required",
    ]
    missing = b"\xc1" + msgpack.packb({"op": "blob", "digest": "a" * 64, "offset": 0, "stream": True})
    assert await requests.open_stream("peer", missing) == f"blob {'a' * 12} is not held here"


def test_the_writing_thread_hands_back_the_writers_error(tmp_path):
    store = BlobStore(tmp_path)
    digest = blake3(b"0123456789").hexdigest()
    writer = store.writer(digest, 10)
    with pytest.raises(BlobError, match="sent more than the 10 bytes announced"):
        with WritingThread(writer) as writing:
            writing.write(memoryview(b"0123456789abc"))
            for _ in range(100):  # the error comes back from a later write at the latest
                writing.write(memoryview(b"more"))
    writer = store.writer(digest, 10)
    with WritingThread(writer) as writing:
        writing.write(memoryview(b"01234"))
        writing.write(memoryview(b"56789"))
    assert writer.finish() == digest and store.path(digest).read_bytes() == b"0123456789"


async def test_a_stream_resumed_from_a_wrong_partial_file_starts_over_once_from_zero(tmp_path):
    ring = Keyring.generate()
    source = BlobStore(tmp_path / "source")
    digest = source.put_bytes(DATA)
    mine = BlobStore(tmp_path / "mine")
    mine.partial_path(digest).write_bytes(os.urandom(1234567))  # an earlier holder's wrong bytes
    requests = PeerRequests(source, LiveLogs())
    chunks = Chunks(requests)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            holder = await start(nursery, ring, chunks, requests.open_stream)
            fetcher = await start(nursery, ring)
            await fetch_blob(mine, fetcher, digest, [holder.local_address], GUARD)
            nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == DATA
    assert chunks.asked >= len(DATA) // (1 << 20)  # the second try, from zero, chunk by chunk
