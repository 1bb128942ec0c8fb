"""Blob fetch between nodes (daemon/jobs/blobfetch.py) over the simulated transport: verified while
streaming, resumed on another holder when the first one dies half-way, a lying holder's bytes
discarded."""

import os

import msgpack
import pytest
import trio

from daemon.jobs.blobfetch import (
    FETCH_CHUNK,
    FETCH_WINDOW,
    BlobRequestError,
    FetchError,
    _decode_reply,
    fetch_blob,
    serve_blob_request,
)
from daemon.jobs.blobstore import BlobError, BlobStore
from daemon.transport.memory import SimNetwork

DATA = os.urandom(2 * FETCH_CHUNK + 12345)


async def ignore(sender, payload):
    return None


async def serve(nursery, network, address, handler):
    transport = network.transport(address)

    async def handle(sender, payload):
        return handler(payload)

    await nursery.start(transport.serve, handle)
    return transport


async def test_a_holder_dying_half_way_is_resumed_from_another(autojump_clock, tmp_path):
    source = BlobStore(tmp_path / "source")
    digest = source.put_bytes(DATA)
    mine = BlobStore(tmp_path / "mine")
    asked = {"first": [], "second": []}

    def first(payload):  # serves the first chunk, then is gone
        asked["first"].append(payload)
        return serve_blob_request(source, payload) if len(asked["first"]) == 1 else None

    def second(payload):
        asked["second"].append(payload)
        return serve_blob_request(source, payload)

    network = SimNetwork(seed=1)
    async with trio.open_nursery() as nursery:
        await serve(nursery, network, "10.0.0.1:1", first)
        await serve(nursery, network, "10.0.0.2:1", second)
        me = network.transport("10.0.0.9:1")
        await nursery.start(me.serve, ignore)
        await fetch_blob(mine, me, digest, ["10.0.0.1:1", "10.0.0.2:1"], timeout=1.0)
        nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == DATA
    # Only what the first holder did not deliver: resumed, not restarted.
    assert min(offset_of(p) for p in asked["second"]) == FETCH_CHUNK


async def test_a_lying_holder_is_discarded_and_the_next_one_used(autojump_clock, tmp_path):
    source = BlobStore(tmp_path / "source")
    digest = source.put_bytes(DATA)
    liar = BlobStore(tmp_path / "liar")
    liar_path = liar.path(digest)
    liar_path.parent.mkdir(parents=True)
    liar_path.write_bytes(bytes(len(DATA)))  # right name and size, wrong content
    mine = BlobStore(tmp_path / "mine")
    network = SimNetwork(seed=2)
    async with trio.open_nursery() as nursery:
        await serve(nursery, network, "10.0.0.1:1", lambda p: serve_blob_request(liar, p))
        await serve(nursery, network, "10.0.0.2:1", lambda p: serve_blob_request(source, p))
        me = network.transport("10.0.0.9:1")
        await nursery.start(me.serve, ignore)
        with pytest.raises(FetchError, match="does not match"):
            await fetch_blob(mine, me, digest, ["10.0.0.1:1"], timeout=1.0)
        assert not mine.has(digest)
        await fetch_blob(mine, me, digest, ["10.0.0.1:1", "10.0.0.2:1"], timeout=1.0)
        nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == DATA


def offset_of(payload: bytes) -> int:
    return msgpack.unpackb(payload[1:])["offset"]


async def test_requests_are_pipelined_up_to_the_window(autojump_clock, tmp_path):
    source = BlobStore(tmp_path / "source")
    data = os.urandom((FETCH_WINDOW * 3) * FETCH_CHUNK + 7)
    digest = source.put_bytes(data)
    mine = BlobStore(tmp_path / "mine")
    busy = {"now": 0, "most": 0}

    async def slow_holder(sender, payload):  # 10 ms per chunk: a holder across a real network
        busy["now"] += 1
        busy["most"] = max(busy["most"], busy["now"])
        await trio.sleep(0.01)
        busy["now"] -= 1
        return serve_blob_request(source, payload)

    network = SimNetwork(seed=3)
    async with trio.open_nursery() as nursery:
        holder = network.transport("10.0.0.1:1")
        await nursery.start(holder.serve, slow_holder)
        me = network.transport("10.0.0.9:1")
        await nursery.start(me.serve, ignore)
        await fetch_blob(mine, me, digest, ["10.0.0.1:1"], timeout=1.0)
        nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == data
    assert busy["most"] == FETCH_WINDOW  # never more in flight (memory), and no fewer (speed)


async def test_a_resumed_fetch_whose_whole_does_not_match_starts_over_once(autojump_clock, tmp_path):
    source = BlobStore(tmp_path / "source")
    digest = source.put_bytes(DATA)
    mine = BlobStore(tmp_path / "mine")
    # What an earlier holder left: the right length, the wrong bytes.
    (tmp_path / "mine" / "tmp" / f"{digest}.partial").write_bytes(bytes(FETCH_CHUNK + 10))
    offsets = []

    def holder(payload):
        offsets.append(offset_of(payload))
        return serve_blob_request(source, payload)

    network = SimNetwork(seed=4)
    async with trio.open_nursery() as nursery:
        await serve(nursery, network, "10.0.0.1:1", holder)
        me = network.transport("10.0.0.9:1")
        await nursery.start(me.serve, ignore)
        await fetch_blob(mine, me, digest, ["10.0.0.1:1"], timeout=1.0)
        nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == DATA
    assert offsets[0] == FETCH_CHUNK + 10 and 0 in offsets  # resumed, then from the start
    assert not list((tmp_path / "mine" / "tmp").iterdir())


async def test_a_holder_serving_smaller_chunks_is_asked_for_the_rest(autojump_clock, tmp_path):
    source = BlobStore(tmp_path / "source")
    digest = source.put_bytes(DATA)
    mine = BlobStore(tmp_path / "mine")
    network = SimNetwork(seed=5)
    async with trio.open_nursery() as nursery:
        # A holder whose frames are smaller (or that serves 1 MiB, as earlier versions do).
        await serve(nursery, network, "10.0.0.1:1", lambda p: serve_blob_request(source, p, 1024 * 1024))
        me = network.transport("10.0.0.9:1")
        await nursery.start(me.serve, ignore)
        await fetch_blob(mine, me, digest, ["10.0.0.1:1"], timeout=1.0)
        nursery.cancel_scope.cancel()
    assert mine.path(digest).read_bytes() == DATA


def test_malformed_requests_are_refused(tmp_path):
    store = BlobStore(tmp_path)
    for payload in (b"\xc1garbage", b"\xc1\x80", b"\xc1" + b"\x81\xa2op\xa3blob"):
        with pytest.raises(BlobRequestError):
            serve_blob_request(store, payload)
    missing = b"\xc1" + msgpack.packb({"op": "blob", "digest": "a" * 64, "offset": 0, "length": 10})
    assert serve_blob_request(store, missing) == f"blob {'a' * 12} is not held here"


def _blob_request(digest: str, offset: int, length: int, **extra) -> bytes:
    return b"\xc1" + msgpack.packb(
        {"op": "blob", "digest": digest, "offset": offset, "length": length, **extra}
    )


def test_raw_replies_carry_the_chunk_after_the_map_and_older_requests_get_it_inside(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put_bytes(DATA)
    raw = serve_blob_request(store, _blob_request(digest, 10, 1000, raw=True))
    head = msgpack.Unpacker()
    head.feed(raw[1:])
    assert head.unpack() == {"size": len(DATA), "length": 1000}
    assert raw[1 + head.tell() :] == DATA[10:1010]
    older = serve_blob_request(store, _blob_request(digest, 10, 1000))
    assert msgpack.unpackb(older[1:]) == {"size": len(DATA), "data": DATA[10:1010]}
    assert [(size, bytes(data)) for size, data in map(_decode_reply, (raw, older))] == [
        (len(DATA), DATA[10:1010])
    ] * 2
    past_the_end = serve_blob_request(store, _blob_request(digest, len(DATA) + 5, 100, raw=True))
    assert _decode_reply(past_the_end)[1] == b""


def test_a_raw_reply_whose_length_disagrees_with_its_bytes_is_refused(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put_bytes(DATA)
    raw = serve_blob_request(store, _blob_request(digest, 0, 100, raw=True))
    for bad in (raw[:-1], raw + b"x", b"\xc1" + msgpack.packb({"length": 1}) + b"x", b"\xc0" + raw[1:]):
        with pytest.raises(BlobError):
            _decode_reply(bad)
