"""Content-addressed blob store in the state dir: contexts, inputs, outputs, logs, images.

A blob's name is the blake3 hex digest of its bytes. Writes go to a temporary file that is
hashed while written, fsynced, and renamed into place only when the digest matches, so a
crash never leaves a blob whose content disagrees with its name. A fetch from a peer may
stop half-way: `BlobWriter` keeps the partial file and resumes from its length (hashing
the part already on disk again first), from the same holder or another one.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from blake3 import blake3

from pack_manager.kernel_copy import copy_range

CHUNK = 256 * 1024
COPY_STEP = 8 * 1024 * 1024  # one kernel copy, hash and writeback step when copying a whole file in
HASH_READ = 1024 * 1024  # one read of a copied piece for its hash (fits the CPU cache)
MAX_READ = 4 * 1024 * 1024  # the most one read_chunk returns
WRITEBACK_STEP = 8 * 1024 * 1024  # written bytes after which their writeback to disk is started
SMALL_FILE = 1024 * 1024
DEFAULT_MAX_BLOB = 4 * 1024**3
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlobError(ValueError):
    """A bad digest, a size over the limit, or content that does not match its digest."""


class DigestMismatch(BlobError):
    """A whole blob received whose bytes hash to another digest (discarded)."""


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BlobError(f"{digest!r:.80} is not a blake3 hex digest")
    return digest


def digest_file(path: Path) -> tuple[str, int]:
    hasher, size = blake3(), 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


class BlobStore:
    def __init__(self, root: Path, max_blob_bytes: int = DEFAULT_MAX_BLOB) -> None:
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobError(f"blob {digest[:12]} is not in this store") from None

    def open_fd(self, digest: str) -> int:
        """The blob open read-only as a raw descriptor (to pass to another process)."""
        try:
            return os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobError(f"blob {digest[:12]} is not in this store") from None

    def read_chunk(self, digest: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise BlobError("offset and length must be ≥ 0")
        with self.open(digest) as src:
            src.seek(offset)
            return src.read(min(length, MAX_READ))

    def put_bytes(self, data: bytes) -> str:
        return self.put_chunks([data])

    def put_file(self, path: Path, digest: str | None = None) -> str:
        """`digest`: what this process already computed for the file (an executor's outputs),
        so a file already held is not read again."""
        if digest is not None and self.has(digest):
            return digest
        # Jobs leave the same small files again and again (an empty log, the same outputs):
        # a small file already held is only hashed, not written and fsynced again. Large
        # ones (image archives) are copied and hashed once.
        if path.stat().st_size <= SMALL_FILE:
            digest, _ = digest_file(path)
            if self.has(digest):
                return digest

        with open(path, "rb") as src:
            return self.put_fd(src.fileno(), self.max_blob_bytes)[0]

    def put_fd(self, fd: int, limit: int) -> tuple[str, int]:
        """Copy the regular file open as `fd` into the store; returns (digest, size). Reads
        from offset 0 whatever the descriptor's position."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BlobError(f"the file passed is a {_file_type(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise BlobError(f"file of {info.st_size:,} bytes is over this node's {limit:,}-byte limit")
        limit = min(limit, self.max_blob_bytes)
        tmp: Path | None = self._tmp / f"put-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                digest, size = _copy_hashed(fd, out, limit)
                held = self.has(digest)
                if not held:
                    os.fsync(out)
            finally:
                os.close(out)
            if held:
                # The same bytes are stored already (a resubmitted input). Freeing a large
                # file's pages takes the kernel a while (0.2 s a GiB): the reply need not wait.
                _delete_in_background(tmp)
                tmp = None
            else:
                self._install(tmp, digest)
            return digest, size
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def put_chunks(
        self, chunks: Iterable[bytes], expected: str | None = None, *, limit: int | None = None
    ) -> str:
        """Store a stream; with `expected`, refuse it unless it hashes to that digest."""
        if expected is not None:
            check_digest(expected)
        limit = self.max_blob_bytes if limit is None else min(limit, self.max_blob_bytes)
        hasher, size = blake3(), 0
        tmp = self._tmp / f"put-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            with open(tmp, "wb") as out:
                writeback = Writeback(out)
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise BlobError(f"blob is larger than the {limit:,}-byte limit")
                    hasher.update(chunk)
                    out.write(chunk)
                    writeback.written(size)
                out.flush()
                os.fsync(out.fileno())
            digest = hasher.hexdigest()
            if expected is not None and digest != expected:
                raise BlobError(f"content hashes to {digest[:12]}, not the expected {expected[:12]}")
            self._install(tmp, digest)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    def _install(self, tmp: Path, digest: str) -> None:
        final = self.path(digest)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def writer(self, digest: str, size: int, *, upload: bool = False) -> "BlobWriter":
        """upload: a client's upload, whose partial file is its own, apart from a peer fetch's
        of the same digest (the two never append to one file)."""
        check_digest(digest)
        partial = self._tmp / f"{digest}.upload" if upload else self.partial_path(digest)
        return BlobWriter(self, digest, size, partial)

    def digests(self) -> Iterator[str]:
        for shard in self.root.iterdir():
            if shard.is_dir() and len(shard.name) == 2:
                for blob in shard.iterdir():
                    if _DIGEST.match(blob.name):
                        yield blob.name

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def partial_path(self, digest: str) -> Path:
        """Where a fetch of `digest` keeps what it has so far (a prefix of the blob)."""
        return self._tmp / f"{check_digest(digest)}.partial"

    def remove_stale_temporaries(self, idle_s: float, keep: Callable[[str], bool]) -> int:
        """Delete temporary files nothing has written for `idle_s` seconds (a fetch given up,
        a copy cut short by a crash), except partial fetches of digests `keep` wants."""
        removed = 0
        horizon = time.time() - idle_s
        for entry in self._tmp.iterdir():
            if entry.name.endswith(".partial") and _DIGEST.match(entry.name[:64]) and keep(entry.name[:64]):
                continue
            try:
                if entry.stat().st_mtime < horizon:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def collect_garbage(self, keep: set[str]) -> list[str]:
        """Delete every blob not in `keep` (and stale partial fetches); return what went."""
        removed = [d for d in list(self.digests()) if d not in keep and self.delete(d)]
        for partial in self._tmp.glob("*.partial"):
            if partial.name[:64] not in keep:
                partial.unlink(missing_ok=True)
        return removed


class Writeback:
    """Starts the kernel writing a file's new pages to disk every WRITEBACK_STEP bytes
    (sync_file_range, Linux), so the disk works while a copy goes on and the fsync that makes
    the blob durable finds little left, instead of all of it starting at the fsync."""

    def __init__(self, out: BinaryIO, start: int = 0) -> None:
        self.out = out
        self.started = start  # writeback asked for up to here

    def written(self, end: int) -> None:
        if end - self.started >= WRITEBACK_STEP:
            self.out.flush()
            _start_writeback(self.out.fileno(), self.started, end - self.started)
            self.started = end


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None  # not Linux: the final fsync does all of it
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages; do not wait


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure only loses the head start


def _delete_in_background(path: Path) -> None:
    """Unlink in a thread of its own; should formd stop first, the blob sweep finds the file."""
    threading.Thread(target=path.unlink, kwargs={"missing_ok": True}, name="blob-delete", daemon=True).start()


def _copy_hashed(src: int, out: int, limit: int) -> tuple[str, int]:
    """Copy `src` from offset 0 to the empty file `out` in COPY_STEP pieces and hash what
    landed in `out`; returns (digest, size). The kernel copies (pack_manager/kernel_copy.py),
    so the bytes cross into this process once, for the hash, read back from `out` while
    still in the page cache: the digest is of what is stored even if `src` changes meanwhile.
    Writeback of each piece starts at once, so the final fsync finds little left."""
    hasher, size = blake3(), 0
    buffer = bytearray(HASH_READ)
    view = memoryview(buffer)
    while count := copy_range(src, out, size, size, COPY_STEP):
        end = size + count
        if end > limit:
            raise BlobError(f"blob is larger than the {limit:,}-byte limit")
        position = size
        while position < end:
            got = os.preadv(out, [view[: min(HASH_READ, end - position)]], position)
            if got == 0:
                raise BlobError("the stored copy is shorter than what was copied")
            hasher.update(view[:got])
            position += got
        _start_writeback(out, size, count)
        size = end
    return hasher.hexdigest(), size


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "pipe"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


class BlobWriter:
    """A resumable, verified download of one blob of known digest and size."""

    def __init__(self, store: BlobStore, digest: str, size: int, partial: Path) -> None:
        if not 0 <= size <= store.max_blob_bytes:
            raise BlobError(
                f"blob {digest[:12]} of {size:,} bytes is over the {store.max_blob_bytes:,}-byte limit"
            )
        self.store, self.digest, self.size = store, digest, size
        self.partial = partial
        self._out: BinaryIO | None = None  # opened on the first write, closed by close()
        self._writeback: Writeback | None = None
        self._hasher = blake3()
        if self.partial.exists():
            with open(self.partial, "rb") as done:
                while chunk := done.read(CHUNK):
                    self._hasher.update(chunk)
            self.offset = self.partial.stat().st_size
            if self.offset > size:
                self.partial.unlink()
                self._hasher, self.offset = blake3(), 0
        else:
            self.offset = 0

    def write(self, chunk: bytes | memoryview) -> None:
        if self.offset + len(chunk) > self.size:
            self.discard()
            raise BlobError(
                f"blob {self.digest[:12]}: the holder sent more than the {self.size:,} bytes announced"
            )
        if self._out is None:
            self._out = open(self.partial, "ab")
            self._writeback = Writeback(self._out, self.offset)
        self._out.write(chunk)
        self._hasher.update(chunk)
        self.offset += len(chunk)
        self._writeback.written(self.offset)

    def close(self) -> None:
        """Flush the partial file and let go of it (a later write opens it again)."""
        if self._out is not None:
            self._out.close()
            self._out, self._writeback = None, None

    @property
    def complete(self) -> bool:
        return self.offset == self.size

    def finish(self) -> str:
        if not self.complete:
            raise BlobError(f"blob {self.digest[:12]}: {self.offset:,} of {self.size:,} bytes received")
        if self._hasher.hexdigest() != self.digest:
            self.discard()
            raise DigestMismatch(f"blob {self.digest[:12]}: content does not match its digest; discarded")
        self.close()
        with open(self.partial, "ab") as out:  # "ab": an empty blob never wrote its file
            os.fsync(out.fileno())
            on_disk = os.fstat(out.fileno()).st_size
        if on_disk != self.size:
            # Another writer moved or extended the partial file (fetches of one digest go one
            # at a time and uploads have their own, so only a bug elsewhere): what this writer
            # hashed is not what is there.
            self.discard()
            raise BlobError(f"blob {self.digest[:12]}: its partial file changed while written; discarded")
        self.store._install(self.partial, self.digest)
        return self.digest

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)
        self._hasher, self.offset = blake3(), 0
