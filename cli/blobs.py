"""Files between `form` and formd: passed open over the local control socket.

An upload hands the local formd the open file (blob.put-fd): formd copies it into its blob
store and hashes it in the same pass, so the bytes are read once and never encoded. A
download asks for the stored blob open (blob.open) and copies it from there, hashing while
copying. A remote node (`form --remote`, HTTPS) cannot take open files: there the bytes go
as base64 pieces (blob.put, blob.read), as every client that cannot pass files does.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from .client import ClientError, Connection, call
from .remote import RemoteTarget

COPY_CHUNK = 1024 * 1024
PIECE = 512 * 1024  # base64 pieces to a remote node: well under the line and body limits
TIMEOUT = 120.0
# formd answers an upload once it has copied and fsynced the file: allow slow disks.
UPLOAD_SECONDS_PER_BYTE = 1 / (16 * 1024 * 1024)


def is_local(target: Path | RemoteTarget) -> bool:
    return not isinstance(target, RemoteTarget)


def upload(target: Path | RemoteTarget, path: Path) -> str:
    """Store the file at `path` in formd's blob store; returns its digest."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror or exc}") from None
    try:
        if not is_local(target):
            return _upload_pieces(target, fd)
        timeout = TIMEOUT + os.fstat(fd).st_size * UPLOAD_SECONDS_PER_BYTE
        with Connection(target, timeout=timeout) as connection:
            reply, _ = connection.call_files("blob.put-fd", {}, [fd])
        return reply["digest"]
    finally:
        os.close(fd)


def _upload_pieces(target: RemoteTarget, fd: int) -> str:
    hasher = blake3()
    with os.fdopen(os.dup(fd), "rb") as source:
        copy(source, None, hasher)
    digest, size, offset = hasher.hexdigest(), os.fstat(fd).st_size, 0
    while True:
        data = os.pread(fd, PIECE, offset)
        params = {"digest": digest, "size": size, "offset": offset, "data": base64.b64encode(data).decode()}
        reply = call(target, "blob.put", params, timeout=TIMEOUT)
        if reply["complete"]:
            return digest
        offset = reply["offset"]


def call_files(target: Path, method: str, params: dict[str, Any]) -> tuple[Any, list[int]]:
    """One request to the local formd whose reply may bring open files (the caller closes them)."""
    with Connection(target, timeout=TIMEOUT) as connection:
        return connection.call_files(method, params)


def open_blob(target: Path | RemoteTarget, digest: str) -> BinaryIO:
    """The stored blob, open for reading (the caller closes it): formd's own file when local,
    else a temporary copy of what the remote node sent."""
    if not is_local(target):
        copied = tempfile.TemporaryFile(prefix="form-blob-")
        _download_pieces(target, digest, copied)
        return copied
    _, files = call_files(target, "blob.open", {"digest": digest})
    return received_file(files, f"blob {digest[:12]}")


def _download_pieces(target: RemoteTarget, digest: str, out: BinaryIO) -> None:
    offset = 0
    while True:
        reply = call(
            target, "blob.read", {"digest": digest, "offset": offset, "length": PIECE}, timeout=TIMEOUT
        )
        data = base64.b64decode(reply["data"])
        out.write(data)
        offset += len(data)
        if offset >= reply["size"] or not data:
            out.flush()
            return


def received_file(files: list[int], what: str) -> BinaryIO:
    """The one open file a reply brought, as a file object."""
    if len(files) != 1:
        for fd in files:
            os.close(fd)
        raise ClientError(f"formd sent {len(files)} open files with {what}, expected one")
    return os.fdopen(files[0], "rb")


def check_digest(source: BinaryIO, digest: str) -> None:
    hasher = blake3()
    copy(source, None, hasher)
    if hasher.hexdigest() != digest:
        raise ClientError(f"blob {digest[:12]}: what formd holds does not match its digest")


def download(target: Path | RemoteTarget, digest: str, dest: Path) -> None:
    """Copy the blob into a new file at `dest`, checking its digest on the way."""
    with open_blob(target, digest) as source, open(dest, "xb") as out:
        hasher = blake3()
        copy(source, out, hasher)
    if hasher.hexdigest() != digest:
        dest.unlink()
        raise ClientError(f"blob {digest[:12]}: what formd holds does not match its digest")


def copy(source: BinaryIO, out: BinaryIO | None, hasher=None, offset: int = 0) -> int:
    """Copy `source` from `offset` to its end into `out` (when given), feeding `hasher`;
    returns the bytes copied. Reads by position: the file's own position does not matter."""
    buffer = bytearray(COPY_CHUNK)
    view = memoryview(buffer)
    fd = source.fileno()
    start = offset
    while count := os.preadv(fd, [buffer], offset):
        chunk = view[:count]
        if hasher is not None:
            hasher.update(chunk)
        if out is not None:
            out.write(chunk)
        offset += count
    return offset - start
