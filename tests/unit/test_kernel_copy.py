"""Kernel copies between files (pack_manager/kernel_copy.py) and the extraction that uses them."""

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from pack_manager.context_archive import ArchiveError, extract_archive
from pack_manager.kernel_copy import copy_exactly, copy_range


@pytest.fixture
def tmpfs_dir():
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("across_file_systems", [False, True])
def test_copy_exactly_moves_a_range_to_another_offset(tmp_path, tmpfs_dir, across_file_systems):
    data = os.urandom(3 * 1024 * 1024 + 7)
    source = (tmpfs_dir if across_file_systems else tmp_path) / "source"
    source.write_bytes(data)
    target = tmp_path / "target"
    src = os.open(source, os.O_RDONLY)
    out = os.open(target, os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(out, b"head", 0)
        copy_exactly(src, out, 1000, 4, len(data) - 1000)
        with pytest.raises(EOFError, match="source ended after 7 of 8 bytes"):
            copy_exactly(src, out, len(data) - 7, 0, 8)
    finally:
        os.close(src)
        os.close(out)
    # b"head" + data[1000:], then the 7 bytes the short copy moved before it failed, at 0
    assert target.read_bytes() == data[-7:] + data[1003:]


def test_copy_range_reads_what_the_kernel_copies_as_empty(tmp_path):
    content = Path("/proc/version").read_bytes()
    src = os.open("/proc/version", os.O_RDONLY)
    out = os.open(tmp_path / "version", os.O_RDWR | os.O_CREAT)
    try:
        assert copy_range(src, out, 0, 0, 1 << 20) == len(content)
        assert copy_range(src, out, len(content), len(content), 1 << 20) == 0
    finally:
        os.close(src)
        os.close(out)
    assert (tmp_path / "version").read_bytes() == content


def _tar_with(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_extraction_copies_large_members_from_a_path_or_an_open_file(tmp_path):
    members = {"big.bin": os.urandom(9 * 1024 * 1024 + 3), "dir/small.txt": b"hello", "empty": b""}
    _tar_with(tmp_path / "out.tar", members)
    extract_archive(tmp_path / "out.tar", tmp_path / "a", limit_bytes=1 << 30)
    with open(tmp_path / "out.tar", "rb") as handle:
        extract_archive(handle, tmp_path / "b", limit_bytes=1 << 30)
    for root in ("a", "b"):
        assert {name: (tmp_path / root / name).read_bytes() for name in members} == members


def test_a_truncated_member_is_an_archive_error(tmp_path):
    _tar_with(tmp_path / "out.tar", {"big.bin": os.urandom(64 * 1024)})
    with open(tmp_path / "out.tar", "r+b") as handle:
        handle.truncate(512 + 10_000)
    with pytest.raises(ArchiveError):
        extract_archive(tmp_path / "out.tar", tmp_path / "x", limit_bytes=1 << 30)
