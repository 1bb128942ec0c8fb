"""The datasets this node holds: where their files are and what they hashed to. File I/O.

A dataset is referenced in place, never copied into the blob store, so it is never among the
blobs peers may fetch. A directory is mounted as it is; a single file is hard-linked (copied
when the link cannot cross file systems) into `<state>/datasets/files/NAME/`, so every
dataset is a directory to mount. Each dataset's manifest (`<state>/datasets/NAME.json`) lists
every file with its size, mtime and blake3; the dataset's digest is blake3 over the sorted
(path, size, digest) lines. Before a job uses a dataset, `verify` checks the files are the
ones hashed: a file whose size or mtime moved is hashed again, and a different digest, a
file gone or a file added refuses the job.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

from daemon.jobs.blobstore import digest_file
from pack_manager.datasets import DatasetError, check_name

MAX_FILES = 1_000_000


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the dataset's root
    size: int
    mtime_ns: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    name: str
    source: str  # what the owner registered
    root: str  # the directory mounted for jobs
    digest: str
    files: tuple[FileEntry, ...]
    unreadable: int = 0  # files other users cannot read (a Podman job's user is one of them)

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "root": self.root,
            "digest": self.digest,
            "files": [[e.path, e.size, e.mtime_ns, e.digest] for e in self.files],
        }

    @classmethod
    def from_json(cls, raw: dict) -> "Manifest":
        return cls(
            name=raw["name"],
            source=raw["source"],
            root=raw["root"],
            digest=raw["digest"],
            files=tuple(FileEntry(p, s, m, d) for p, s, m, d in raw["files"]),
        )


def manifest_digest(files: tuple[FileEntry, ...]) -> str:
    hasher = blake3()
    for entry in sorted(files, key=lambda e: e.path):
        hasher.update(f"{entry.path}\x00{entry.size}\x00{entry.digest}\n".encode())
    return hasher.hexdigest()


def _walk(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every regular file under root (relative path, stat); anything else is refused."""
    found: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            info = os.lstat(full)
            rel = str(full.relative_to(root))
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise DatasetError(f"{rel!r} is not a regular file or directory (links are not followed)")
            found.append((rel, info))
            if len(found) > MAX_FILES:
                raise DatasetError(f"more than {MAX_FILES:,} files")
    return sorted(found)


def _readable_by_others(info: os.stat_result) -> bool:
    return bool(info.st_mode & stat.S_IROTH)


class DatasetStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "datasets"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._manifests: dict[str, Manifest] = {}
        self._protected: frozenset[str] | None = None
        for path in sorted(self.root.glob("*.json")):
            try:
                manifest = Manifest.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self._manifests[manifest.name] = manifest

    def names(self) -> list[str]:
        return sorted(self._manifests)

    def get(self, name: str) -> Manifest | None:
        return self._manifests.get(name)

    def protected(self) -> frozenset[str]:
        """Digests that must never leave this node: every dataset's and every file's (kept
        between changes: every blob request a peer sends asks)."""
        if self._protected is None:
            self._protected = frozenset(
                d for m in self._manifests.values() for d in [m.digest, *(e.digest for e in m.files)]
            )
        return self._protected

    def scan(self, name: str, source: Path) -> Manifest:
        """Hash a file or directory into a manifest (blocking; run it in a thread)."""
        check_name(name)
        source = Path(source)
        if not source.is_absolute():
            raise DatasetError(f"{source}: give an absolute path")
        try:
            info = os.lstat(source)
        except OSError as exc:
            raise DatasetError(f"{source}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(info.st_mode):
            root, walk_root = source, source
        elif stat.S_ISREG(info.st_mode):
            root, walk_root = self.root / "files" / name, source.parent  # linked there by save()
        else:
            raise DatasetError(f"{source} is not a regular file or a directory")
        try:
            walked = _walk(source) if walk_root == source else [(source.name, info)]
            files = tuple(
                FileEntry(rel, st.st_size, st.st_mtime_ns, digest_file(walk_root / rel)[0])
                for rel, st in walked
            )
        except OSError as exc:
            raise DatasetError(f"{source}: {exc.strerror or exc}") from None
        unreadable = sum(1 for _, st in walked if not _readable_by_others(st))
        return Manifest(name, str(source), str(root), manifest_digest(files), files, unreadable)

    def _link_single_file(self, manifest: Manifest) -> None:
        """A directory holding just the file: a hard link, or a copy across file systems."""
        holder = Path(manifest.root)
        if holder.exists():
            shutil.rmtree(holder)
        holder.mkdir(parents=True, mode=0o755)
        source = Path(manifest.source)
        target = holder / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        entry = manifest.files[0]
        if digest_file(target)[0] != entry.digest:
            raise DatasetError(f"{source} changed while it was added")

    def save(self, manifest: Manifest) -> None:
        """Keep the manifest (blocking: a single file is linked or copied first)."""
        if manifest.root != manifest.source:
            self._link_single_file(manifest)
        path = self.root / f"{manifest.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest.to_json()))
        os.replace(tmp, path)
        self._manifests[manifest.name] = manifest
        self._protected = None

    def remove(self, name: str) -> bool:
        manifest = self._manifests.pop(name, None)
        self._protected = None
        (self.root / f"{name}.json").unlink(missing_ok=True)
        shutil.rmtree(self.root / "files" / name, ignore_errors=True)
        return manifest is not None

    def verify(self, name: str) -> Path:
        """The directory to mount, once its files are the ones hashed (blocking)."""
        manifest = self._manifests.get(name)
        if manifest is None:
            raise DatasetError(f"dataset {name} is not held on this node")
        root = Path(manifest.root)
        try:
            walked = dict(_walk(root))
        except (OSError, DatasetError) as exc:
            raise DatasetError(f"dataset {name}: {root}: {exc}") from None
        expected = {entry.path: entry for entry in manifest.files}
        if set(walked) != set(expected):
            extra = sorted(set(walked) - set(expected))[:3]
            gone = sorted(set(expected) - set(walked))[:3]
            raise DatasetError(
                f"dataset {name} changed on disk since it was added (new: {extra}, gone: {gone}); "
                "add it again to publish the new version"
            )
        for rel, info in walked.items():
            entry = expected[rel]
            if info.st_size == entry.size and info.st_mtime_ns == entry.mtime_ns:
                continue
            if digest_file(root / rel)[0] != entry.digest:
                raise DatasetError(
                    f"dataset {name}: {rel} changed on disk since it was added; add it again to publish it"
                )
        return root
