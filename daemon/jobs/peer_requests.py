"""Side requests between nodes (0xc1 payloads, daemon/cluster/wire.py SIDE_REQUEST): a thin driver.

Three kinds travel over the same sealed Transport as gossip, as requests with a reply:

    blob chunk  0xc1 + msgpack {"op": "blob", "digest": hex, "offset": int, "length": int}
                -> 0xc1 + msgpack {"size": total bytes, "data": bytes}   (daemon/jobs/blobfetch.py)
    live log    0xc1 + msgpack {"op": "log", "job": hex, "offset": int}
                -> 0xc1 + msgpack {"data": bytes}
    image       0xc1 + msgpack {"op": "image", "id": published image id}
                -> 0xc1 + msgpack {"digest": hex, "size": int} | {"pending": true}
                   (daemon/jobs/images.py: the image's archive, exported into the blob store)
    blob stream 0xc1 + msgpack {"op": "blob", "digest": hex, "offset": int, "stream": true}
                (a file stream of its own, daemon/transport/file_stream.py)
                -> head msgpack {"size": total bytes}, then the blob from offset
    any         -> a str reason for a fair refusal (not held, not running here)

A malformed request raises BlobRequestError (a ValueError): the node logs it as a bad message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import msgpack

from daemon.cluster.wire import SIDE_REQUEST
from daemon.jobs.blobfetch import FETCH_CHUNK, BlobRequestError, serve_blob_request
from daemon.jobs.blobstore import BlobError, BlobStore
from daemon.jobs.dataset_store import DatasetStore
from daemon.transport.file_stream import FileRange
from daemon.transport.interface import Transport, TransportError

LOG_CHUNK = 512 * 1024  # of a live log per request: what job.log hands on at once


class LiveLogs:
    """The log files of the runs in progress on this node (job hex -> path), written by the job
    loop and read by local `job.log` calls and by peers' live log requests."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}

    def open(self, job_hex: str, path: Path) -> None:
        self.paths[job_hex] = path

    def close(self, job_hex: str) -> None:
        self.paths.pop(job_hex, None)

    def read(self, job_hex: str, offset: int, length: int = LOG_CHUNK) -> bytes | None:
        """Part of the log of a run in progress on this node, or None when none runs here."""
        path = self.paths.get(job_hex)
        if path is None:
            return None
        try:
            with open(path, "rb") as src:
                src.seek(offset)
                return src.read(length)
        except FileNotFoundError:
            return None


class PeerRequests:
    """Serves peers' side requests from this node's blob store and live logs; never a piece of
    a dataset this node holds (daemon/jobs/dataset_store.py), whoever asks."""

    def __init__(
        self,
        blobs: BlobStore,
        live_logs: LiveLogs,
        max_chunk: int = FETCH_CHUNK,
        datasets: DatasetStore | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.blobs = blobs
        self.live_logs = live_logs
        self.max_chunk = max_chunk  # blobfetch.chunk_limit of this node's frame size
        self.datasets = datasets
        self.log = log
        self.images: Any = None  # daemon.jobs.images.NodeImages, given by offer_images

    def offer_images(self, images: Any) -> None:
        """Serve image exports from now on. The one link made after construction: the node
        dispatches peers' requests here, and the images publish through that node, so one of
        the two has to come second."""
        self.images = images

    def serve(self, payload: bytes) -> bytes | str:
        try:
            request = msgpack.unpackb(payload[1:], raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise BlobRequestError("bad side request: not msgpack") from None
        if isinstance(request, dict) and request.get("op") == "image":
            return (
                self.images.serve_export(request) if self.images is not None else "images are not served here"
            )
        if isinstance(request, dict) and request.get("op") == "log":
            job_hex, offset = request.get("job"), request.get("offset")
            if not isinstance(job_hex, str) or not isinstance(offset, int) or offset < 0:
                raise BlobRequestError("log request: job and offset required")
            data = self.live_logs.read(job_hex, offset)
            if data is None:
                return f"job {job_hex[:12]} is not running here"
            return SIDE_REQUEST + msgpack.packb({"data": data}, use_bin_type=True)
        refusal = self._dataset_refusal(request)
        return refusal or serve_blob_request(self.blobs, payload, self.max_chunk)

    async def open_stream(self, sender: str, payload: bytes) -> FileRange | str:
        """A blob from an offset as a file stream (daemon/transport/file_stream.py), or why not."""
        try:
            request = msgpack.unpackb(payload[1:], raw=False) if payload[:1] == SIDE_REQUEST else None
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            request = None
        if not isinstance(request, dict) or request.get("op") != "blob" or request.get("stream") is not True:
            return "bad stream request: not a blob stream"
        digest, offset = request.get("digest"), request.get("offset")
        if not isinstance(digest, str) or not isinstance(offset, int) or offset < 0:
            return "bad stream request: digest and offset >= 0 required"
        if refusal := self._dataset_refusal(request):
            return refusal
        try:
            fd = self.blobs.open_fd(digest)
        except BlobError:
            return f"blob {digest[:12]} is not held here"
        size = os.fstat(fd).st_size
        if offset > size:
            os.close(fd)
            return f"offset {offset:,} is past the end of blob {digest[:12]} ({size:,} bytes)"
        return FileRange(msgpack.packb({"size": size}), fd, offset, size - offset)

    def _dataset_refusal(self, request: Any) -> str | None:
        digest = request.get("digest") if isinstance(request, dict) else None
        if self.datasets is not None and isinstance(digest, str) and digest in self.datasets.protected():
            if self.log is not None:
                self.log(digest)
            return f"blob {digest[:12]} belongs to a dataset; datasets never leave their holder"
        return None


async def request_live_log(
    transport: Transport, address: str, job_hex: str, offset: int, timeout: float
) -> bytes | None:
    """A chunk of the live log of a run on the node at `address`, or None when it has none."""
    request = SIDE_REQUEST + msgpack.packb({"op": "log", "job": job_hex, "offset": offset}, use_bin_type=True)
    try:
        reply = await transport.request(address, request, timeout)
        value = msgpack.unpackb(reply[1:], raw=False) if reply[:1] == SIDE_REQUEST else None
    except (TransportError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    return value.get("data") if isinstance(value, dict) and isinstance(value.get("data"), bytes) else None
