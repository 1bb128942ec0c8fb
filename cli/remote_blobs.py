"""Files between `form --remote` and a node's blob store, streamed over HTTPS.

An upload is `PUT /v1/blobs/{digest}?size=N` with the file as the body, read from disk as it
is sent; the node checks the bytes against the digest in the path. When the node holds an
unfinished copy from an earlier attempt it answers with the offset it has, and the rest is
sent from there (`&offset=M`). A download is `GET /v1/blobs/{digest}` written to disk as it
arrives and hashed on the way, so a corrupted copy is deleted, not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import httpx
from blake3 import blake3

from pack_manager.context_archive import file_digest

from .progress import transfer_bar
from .remote import RemoteError, RemoteTarget, error_text

PIECE = 1024 * 1024
# An upload that makes no headway this many times in a row is given up.
ATTEMPTS = 3


def upload(target: RemoteTarget, path: Path, *, as_json: bool = False) -> str:
    """Store the file at `path` in the node's blob store; returns its digest."""
    digest = file_digest(path)
    size = path.stat().st_size
    offset = shown = 0  # shown: where the bar stands
    with transfer_bar(f"upload {path.name}", size, as_json=as_json) as advance:

        def sent(count: int) -> None:
            nonlocal shown
            shown += count
            advance(count)

        for _ in range(ATTEMPTS):
            sent(offset - shown)  # an attempt starts where the node holds the blob, not past it
            query = f"size={size}" + (f"&offset={offset}" if offset else "")
            response = target.request(
                "PUT",
                f"/v1/blobs/{digest}?{query}",
                stream_body=_pieces(path, offset, sent),
                digest="stream",
            )
            reply = _json(response)
            if reply.get("complete"):
                sent(size - shown)  # a node that held it already took nothing
                return digest
            offset = int(reply.get("offset", 0))
    raise RemoteError(f"upload of {path} to {target.url} made no progress after {ATTEMPTS} attempts")


def _pieces(path: Path, offset: int, advance: Callable[[int], None]) -> Iterator[bytes]:
    with open(path, "rb") as source:
        source.seek(offset)
        while piece := source.read(PIECE):
            advance(len(piece))
            yield piece


def download(target: RemoteTarget, digest: str, dest: Path, *, as_json: bool = False) -> None:
    """Write the blob into `dest`, checking its digest; a mismatch deletes the file."""
    hasher = blake3()
    with target.stream(f"/v1/blobs/{digest}") as response, open(dest, "wb") as out:
        size = int(response.headers.get("x-blob-size", "0"))
        with transfer_bar(f"download {dest.name}", size, as_json=as_json) as advance:
            for piece in response.iter_bytes(PIECE):
                hasher.update(piece)
                out.write(piece)
                advance(len(piece))
    if hasher.hexdigest() != digest:
        dest.unlink()
        raise RemoteError(f"download of {digest[:12]} does not match its digest")


def _json(response: httpx.Response) -> dict:
    if response.status_code != 200:
        raise RemoteError(error_text(response))
    try:
        value = response.json()
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise RemoteError(f"the node answered an upload with {response.text[:100]!r}, not a JSON object")
    return value
