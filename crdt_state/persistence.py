"""The document on disk: a snapshot plus an append-only log of updates since it.

Layout, in `<state_dir>/document/`:
  snapshot     magic b"FNSNAP1\\n" | u64 length | blake3(payload)[:16] | payload (a full state)
  updates.log  entries of  u32 length | blake3(payload)[:8] | payload (one update each)
  lock         held with flock while a store is open, so two daemons never share a store

Appends go straight to the file with os.write (no user-space buffer), so a kill -9 loses
nothing that append() returned from; `durable=True` also fsyncs, for power loss. A crash in
the middle of an append leaves a torn last entry; opening the store cuts the log back to the
last whole entry. Anything after a damaged entry is dropped too (it cannot be trusted to be
framed right) and `dropped_bytes` says how much, so the daemon can log it.

snapshot() writes a temporary file, fsyncs, renames it over the old one, then empties the
log. A crash between the rename and the truncation only means some updates are replayed
twice on the next start, which a CRDT ignores.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import blake3

SNAPSHOT_MAGIC = b"FNSNAP1\n"
MAX_ENTRY = 64 * 1024 * 1024
_ENTRY_HEADER = struct.Struct(">I8s")
_SNAPSHOT_HEADER = struct.Struct(">8sQ16s")


class StoreError(RuntimeError):
    """The store cannot be opened or is damaged beyond a torn log tail; says which file."""


def _digest(payload: bytes, size: int) -> bytes:
    return blake3.blake3(payload).digest(length=size)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class DocumentStore:
    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "document"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.snapshot_path = self.directory / "snapshot"
        self.log_path = self.directory / "updates.log"
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(f"{self.directory}: the store is in use by another process") from None
        for leftover in self.directory.glob("snapshot.*.tmp"):
            leftover.unlink()  # a snapshot that never got renamed into place
        created = not self.log_path.exists()
        self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if created:
            _fsync_dir(self.directory)
        entries, good_end = self._scan_log()
        size = os.fstat(self._log_fd).st_size
        self.dropped_bytes = size - good_end
        if self.dropped_bytes:
            os.ftruncate(self._log_fd, good_end)
            os.fsync(self._log_fd)
        self.log_bytes = good_end
        self.log_entries = len(entries)

    # ---- reading ----------------------------------------------------------------------------

    def _scan_log(self) -> tuple[list[bytes], int]:
        with open(self.log_path, "rb") as handle:
            data = handle.read()
        entries: list[bytes] = []
        offset = 0
        while offset + _ENTRY_HEADER.size <= len(data):
            length, digest = _ENTRY_HEADER.unpack_from(data, offset)
            start = offset + _ENTRY_HEADER.size
            end = start + length
            if length > MAX_ENTRY or end > len(data):
                break
            payload = data[start:end]
            if _digest(payload, 8) != digest:
                break
            entries.append(payload)
            offset = end
        return entries, offset

    def _read_snapshot(self) -> bytes | None:
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) < _SNAPSHOT_HEADER.size:
            raise StoreError(f"{self.snapshot_path}: too short to be a snapshot")
        magic, length, digest = _SNAPSHOT_HEADER.unpack_from(data)
        payload = data[_SNAPSHOT_HEADER.size :]
        if magic != SNAPSHOT_MAGIC:
            raise StoreError(f"{self.snapshot_path}: not a formnet document snapshot")
        if length != len(payload) or _digest(payload, 16) != digest:
            raise StoreError(f"{self.snapshot_path}: damaged (length or checksum does not match)")
        return payload

    def load(self) -> list[bytes]:
        """The snapshot (if any) followed by every whole logged update, in order."""
        snapshot = self._read_snapshot()
        entries, _ = self._scan_log()
        return ([snapshot] if snapshot is not None else []) + entries

    # ---- writing ----------------------------------------------------------------------------

    def append(self, update: bytes, durable: bool) -> None:
        if not isinstance(update, (bytes, bytearray)) or not update:
            raise StoreError("an update must be non-empty bytes")
        if len(update) > MAX_ENTRY:
            raise StoreError(f"an update of {len(update)} bytes is over the {MAX_ENTRY} entry limit")
        update = bytes(update)
        # One write call per entry: header and payload land together or the tail is torn.
        _write_all(self._log_fd, _ENTRY_HEADER.pack(len(update), _digest(update, 8)) + update)
        if durable:
            os.fsync(self._log_fd)
        self.log_bytes += _ENTRY_HEADER.size + len(update)
        self.log_entries += 1

    def snapshot(self, full_state: bytes) -> None:
        """Replace the snapshot with full_state (atomically) and empty the log. A crash
        between the two leaves logged updates the snapshot already holds; replaying them is
        harmless, since applying an update twice changes nothing."""
        if not isinstance(full_state, (bytes, bytearray)):
            raise StoreError("a snapshot must be bytes")
        full_state = bytes(full_state)
        header = _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, len(full_state), _digest(full_state, 16))
        temporary = self.directory / f"snapshot.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, header + full_state)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.snapshot_path)
        _fsync_dir(self.directory)
        os.ftruncate(self._log_fd, 0)
        os.fsync(self._log_fd)
        self.log_bytes = 0
        self.log_entries = 0

    def close(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            os.close(self._lock_fd)  # closing releases the flock
            self._log_fd = self._lock_fd = -1

    def __enter__(self) -> "DocumentStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
