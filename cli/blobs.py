"""Files between `form` and the local formd, passed open over the control socket.

An upload hands formd the open file (blob.put-fd): formd copies it into its blob store in the
kernel and hashes the stored copy, so `form` never reads the bytes and nothing is encoded. A download asks for
the stored blob open (blob.open) and copies it from there, hashing while copying. A remote
node (`form --remote`) takes no open files: cli/remote_blobs.py streams over HTTPS instead.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from .client import ClientError, Connection

COPY_CHUNK = 1024 * 1024
TIMEOUT = 120.0
# formd answers an upload once it has copied and fsynced the file: allow slow disks.
UPLOAD_SECONDS_PER_BYTE = 1 / (16 * 1024 * 1024)


def upload(socket_path: Path, path: Path) -> str:
    """Store the file at `path` in formd's blob store; returns its digest."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror or exc}") from None
    try:
        timeout = TIMEOUT + os.fstat(fd).st_size * UPLOAD_SECONDS_PER_BYTE
        with Connection(socket_path, timeout=timeout) as connection:
            reply, _ = connection.call_files("blob.put-fd", {}, [fd])
        return reply["digest"]
    finally:
        os.close(fd)


def call_files(socket_path: Path, method: str, params: dict[str, Any]) -> tuple[Any, list[int]]:
    """One request whose reply may bring open files (the caller closes them)."""
    with Connection(socket_path, timeout=TIMEOUT) as connection:
        return connection.call_files(method, params)


def open_blob(socket_path: Path, digest: str) -> BinaryIO:
    """The stored blob, open for reading (the caller closes it)."""
    _, files = call_files(socket_path, "blob.open", {"digest": digest})
    return received_file(files, f"blob {digest[:12]}")


def received_file(files: list[int], what: str) -> BinaryIO:
    """The one open file a reply brought, as a file object."""
    if len(files) != 1:
        for fd in files:
            os.close(fd)
        raise ClientError(f"formd sent {len(files)} open files with {what}, expected one")
    return os.fdopen(files[0], "rb")


def check_digest(source: BinaryIO, digest: str) -> None:
    """Hash the whole file mapped into memory, on every core (the file is formd's stored
    copy, which nothing changes)."""
    hasher = blake3(max_threads=blake3.AUTO)
    if os.fstat(source.fileno()).st_size:
        with mmap.mmap(source.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            hasher.update(mapped)
    if hasher.hexdigest() != digest:
        raise ClientError(f"blob {digest[:12]}: what formd holds does not match its digest")


def download(socket_path: Path, digest: str, dest: Path) -> None:
    """Copy the blob into a new file at `dest`, checking its digest on the way."""
    with open_blob(socket_path, digest) as source, open(dest, "xb") as out:
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
