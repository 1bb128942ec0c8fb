"""Tar archives that cross the trust boundary: job contexts in, job outputs out.

A context tarball comes from another node, so it is checked member by member before
anything is extracted or sent to Podman: no absolute paths, no '..', no links that leave
the archive, no devices, fifos or sockets, and a bounded total size and member count.
The outputs tarball we produce is deterministic (sorted names, zero times and owners) so
replicas that computed the same files produce the same digest.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import blake3

from pack_manager.kernel_copy import copy_exactly

MAX_MEMBERS = 100_000
MAX_TEXT_MEMBER = 1024 * 1024  # read at most this much of one file inside an archive
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive that is refused; the message names the member and the rule it breaks."""


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    members: int
    total_bytes: int  # sum of regular file sizes
    names: frozenset[str]  # normalized member names (files, dirs, links)


def file_digest(path: Path) -> str:
    hasher = blake3.blake3()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def check_archive(path: Path | BinaryIO, limit_bytes: int) -> ArchiveSummary:
    """Validate every member of a tar file (a path, or a file open for reading from its
    start); raise ArchiveError on the first bad one."""
    size = path.stat().st_size if isinstance(path, Path) else os.fstat(path.fileno()).st_size
    if size > limit_bytes:
        raise ArchiveError(f"archive is {size} bytes, over the limit of {limit_bytes}")
    try:
        with _open_tar(path) as archive:
            return _check_members(archive, limit_bytes)
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a readable uncompressed tar archive ({exc})") from exc


class _KernelCopyingTar(tarfile.TarFile):
    """Extracts regular members with kernel copies (pack_manager/kernel_copy.py) straight
    from the archive's file: a large output unpacks at the speed of cp."""

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        try:
            source = self.fileobj.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            source = None
        if source is None or tarinfo.sparse is not None:
            super().makefile(tarinfo, targetpath)
            return
        with open(targetpath, "wb") as target:
            try:
                copy_exactly(source, target.fileno(), tarinfo.offset_data, 0, tarinfo.size)
            except EOFError as exc:
                raise tarfile.ReadError(f"{tarinfo.name!r}: unexpected end of data ({exc})") from None


def _open_tar(source: Path | BinaryIO) -> tarfile.TarFile:
    if isinstance(source, Path):
        return _KernelCopyingTar.open(source, mode="r:")
    source.seek(0)
    return _KernelCopyingTar.open(fileobj=source, mode="r:")


def _check_members(archive: tarfile.TarFile, limit_bytes: int) -> ArchiveSummary:
    names: set[str] = set()
    total = 0
    count = 0
    for member in archive:
        count += 1
        if count > MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} members")
        name = _normalize(member.name)
        if member.isreg():
            total += member.size
            if total > limit_bytes:
                raise ArchiveError(f"unpacked size passes the limit of {limit_bytes} bytes at {name!r}")
        elif member.issym():
            _check_link_target(name, member.linkname, "symlink")
        elif member.islnk():
            target = _normalize(member.linkname)
            if target not in names:
                raise ArchiveError(
                    f"{name!r}: hard link to {member.linkname!r}, which is not an earlier member"
                )
        elif not member.isdir():
            raise ArchiveError(f"{name!r}: {_kind(member)} entries are not allowed")
        if name != ".":
            names.add(name)
    return ArchiveSummary(members=count, total_bytes=total, names=frozenset(names))


def _normalize(raw: str) -> str:
    if not raw or "\x00" in raw:
        raise ArchiveError("member with an empty or NUL-containing name")
    if raw.startswith("/"):
        raise ArchiveError(f"{raw!r}: absolute paths are not allowed")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{raw!r}: '..' is not allowed in member names")
    return "/".join(parts) or "."


def _check_link_target(name: str, target: str, what: str) -> None:
    if not target or target.startswith("/"):
        raise ArchiveError(f"{name!r}: {what} to absolute path {target!r} points outside the archive")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(f"{name!r}: {what} to {target!r} points outside the archive")


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return f"type {member.type!r}"


def extract_archive(path: Path | BinaryIO, dest: Path, limit_bytes: int) -> ArchiveSummary:
    """Check, then extract into dest (created, must be empty). Owners are not restored."""
    summary = check_archive(path, limit_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ArchiveError(f"{dest} is not empty")
    with _open_tar(path) as archive:
        # The data filter re-checks what we checked and also drops setuid bits and owners.
        archive.extractall(dest, filter="data")
    return summary


def text_member(archive_path: Path, name: str, limit: int = MAX_TEXT_MEMBER) -> str | None:
    """The text of the regular file `name` in the archive (a build's Containerfile), or None
    when there is no such file of at most `limit` bytes (the build then says what is wrong)."""
    try:
        with tarfile.open(archive_path, mode="r:") as archive:
            member = archive.getmember(name.removeprefix("./"))
            if not member.isfile() or member.size > limit:
                return None
            handle = archive.extractfile(member)
            if handle is None:
                return None
            return io.TextIOWrapper(handle, encoding="utf-8", errors="replace").read()
    except (KeyError, tarfile.TarError, OSError):
        return None


def pack_directory(src: Path, dest: Path, limit_bytes: int) -> tuple[str, int]:
    """Deterministic tar of src (files, dirs, symlinks as links); returns (blake3 hex, size).

    Raises ArchiveError when the content passes limit_bytes or holds something other than
    files, directories and symlinks (a job could leave a fifo behind; it is not output).
    """
    entries = sorted(_walk(src))
    total = 0
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for rel in entries:
            full = src / rel
            info = archive.gettarinfo(str(full), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.pax_headers = {}
            if info.isreg():
                total += info.size
                if total > limit_bytes:
                    raise ArchiveError(f"outputs pass the limit of {limit_bytes} bytes at {rel!r}")
                info.mode = 0o755 if info.mode & 0o111 else 0o644
                with open(full, "rb") as handle:
                    archive.addfile(info, handle)
            elif info.isdir():
                info.mode = 0o755
                archive.addfile(info)
            elif info.issym() or info.islnk():
                info.mode = 0o777 if info.issym() else 0o644
                archive.addfile(info)
            else:
                raise ArchiveError(f"outputs: {rel!r} is a {_kind(info)}, not a file, directory or symlink")
    return file_digest(dest), dest.stat().st_size


def _walk(root: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            found.append(rel)
    return found


def pack_context(src: Path, dest: Path) -> tuple[str, int]:
    """The submitting side: a deterministic tar of a build context directory."""
    if not src.is_dir():
        raise ArchiveError(f"{src} is not a directory")
    for rel in _walk(src):
        mode = os.lstat(src / rel).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            raise ArchiveError(f"{rel!r} is not a file, directory or symlink")
    return pack_directory(src, dest, limit_bytes=1 << 62)
