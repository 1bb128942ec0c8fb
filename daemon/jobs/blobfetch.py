"""Blobs between nodes: serve chunks of held blobs, fetch missing ones from their holders.

Requests travel over the same sealed Transport as gossip. A blob request payload starts with
the byte 0xc1, which msgpack never uses, so it cannot be mistaken for a gossip payload:

    request  0xc1 + msgpack {"op": "blob", "digest": hex, "offset": int, "length": int}
    reply    0xc1 + msgpack {"size": total bytes, "data": bytes}     or a str reason (failure)

The fetcher writes through BlobWriter (verified, resumable from its partial file), and tries
the next holder when one fails or dies half-way.
"""

from __future__ import annotations

from typing import Any, Iterable

import msgpack
import trio

from daemon.cluster.wire import SIDE_REQUEST as BLOB_PREFIX
from daemon.jobs.blobstore import CHUNK, BlobError, BlobStore, check_digest
from daemon.transport.interface import Transport, TransportError

FETCH_CHUNK = 4 * CHUNK  # 1 MiB per request: well under the frame limit


class BlobRequestError(ValueError):
    """A malformed blob request (the peer's bug or an attack): logged as a bad message."""


class FetchError(Exception):
    """No holder could deliver the blob; the message lists why per holder."""


def is_blob_request(payload: bytes) -> bool:
    return payload[:1] == BLOB_PREFIX


def serve_blob_request(store: BlobStore, payload: bytes) -> bytes | str:
    """A chunk, or a str reason for a fair refusal (not held); BlobRequestError when malformed."""
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
        data = store.read_chunk(digest, offset, min(length, FETCH_CHUNK))
        return BLOB_PREFIX + msgpack.packb({"size": store.size(digest), "data": data}, use_bin_type=True)
    except BlobRequestError:
        raise
    except OSError as exc:
        return f"blob read failed: {exc.strerror or exc}"
    except (ValueError, BlobError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BlobRequestError(f"bad blob request: {type(exc).__name__}") from None


def _decode_reply(reply: bytes) -> tuple[int, bytes]:
    if not is_blob_request(reply):
        raise BlobError("reply is not a blob chunk")
    value: Any = msgpack.unpackb(reply[1:], raw=False)
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("size"), int)
        or not isinstance(value.get("data"), bytes)
    ):
        raise BlobError("reply is not a blob chunk")
    return value["size"], value["data"]


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
    writer = None
    partial = store._tmp / f"{digest}.partial"
    offset = partial.stat().st_size if partial.exists() else 0  # resume where an earlier holder stopped
    while True:
        request = BLOB_PREFIX + msgpack.packb(
            {"op": "blob", "digest": digest, "offset": offset, "length": FETCH_CHUNK}, use_bin_type=True
        )
        reply = await transport.request(address, request, timeout)
        total, data = _decode_reply(reply)
        if writer is None:
            writer = await trio.to_thread.run_sync(store.writer, digest, total)
        elif total != writer.size:
            raise BlobError(f"holder changed its size for {digest[:12]}")
        if writer.offset != offset:
            offset = writer.offset  # the partial file did not fit this blob and was dropped: ask again
            continue
        if data:
            await trio.to_thread.run_sync(writer.write, data)
        if writer.complete:
            await trio.to_thread.run_sync(writer.finish)
            return
        if not data:
            raise BlobError(f"holder sent no data at offset {writer.offset}")
        offset = writer.offset
