"""A stand-in for the daemon's blob store in the executor tests: files named by their BLAKE3
digest in one directory, which is all an executor reads blobs through."""

from pathlib import Path

import blake3


class Blobs:
    """digest -> file; `path` is None for a blob it does not hold."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        digest = blake3.blake3(data).hexdigest()
        (self.root / digest).write_bytes(data)
        return digest

    def path(self, digest: str):
        candidate = self.root / digest
        return candidate if candidate.exists() else None
