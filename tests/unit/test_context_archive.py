"""Context archives: every kind of hostile member is refused before extraction; outputs
tarballs are deterministic."""

import io
import os
import tarfile

import pytest

from pack_manager.context_archive import (
    ArchiveError,
    check_archive,
    extract_archive,
    pack_context,
    pack_directory,
)


def make_tar(path, members):
    """members: list of (TarInfo kwargs, data bytes or None)."""
    with tarfile.open(path, "w") as archive:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_good_context_extracts(tmp_path):
    tar = make_tar(
        tmp_path / "ok.tar",
        [
            ({"name": "Containerfile"}, b"FROM x\n"),
            ({"name": "src", "type": tarfile.DIRTYPE}, None),
            ({"name": "src/a.txt"}, b"a"),
            ({"name": "src/link", "type": tarfile.SYMTYPE, "linkname": "a.txt"}, None),
            ({"name": "src/hard", "type": tarfile.LNKTYPE, "linkname": "src/a.txt"}, None),
        ],
    )
    summary = extract_archive(tar, tmp_path / "out", limit_bytes=20_000)
    assert summary.names >= {"Containerfile", "src/a.txt", "src/link"}
    assert (tmp_path / "out/src/link").read_text() == "a"


@pytest.mark.parametrize(
    "members, fragment",
    [
        ([({"name": "/etc/passwd"}, b"x")], "absolute"),
        ([({"name": "../evil"}, b"x")], r"'\.\.'"),
        ([({"name": "a/../../evil"}, b"x")], r"'\.\.'"),
        ([({"name": "l", "type": tarfile.SYMTYPE, "linkname": "/etc/shadow"}, None)], "outside"),
        ([({"name": "d/l", "type": tarfile.SYMTYPE, "linkname": "../../x"}, None)], "outside"),
        ([({"name": "h", "type": tarfile.LNKTYPE, "linkname": "/etc/shadow"}, None)], "absolute|hard link"),
        ([({"name": "h", "type": tarfile.LNKTYPE, "linkname": "missing"}, None)], "hard link"),
        ([({"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)], "device"),
        ([({"name": "blk", "type": tarfile.BLKTYPE}, None)], "device"),
        ([({"name": "pipe", "type": tarfile.FIFOTYPE}, None)], "fifo"),
        ([({"name": "big"}, b"x" * 12_000), ({"name": "big2"}, b"y" * 12_000)], "limit"),
    ],
)
def test_hostile_archives_are_refused_and_nothing_is_extracted(tmp_path, members, fragment):
    tar = make_tar(tmp_path / "bad.tar", members)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=fragment):
        extract_archive(tar, dest, limit_bytes=20_000)
    assert not dest.exists() or not any(dest.iterdir())


def test_archive_file_over_the_limit_is_refused_before_reading(tmp_path):
    tar = make_tar(tmp_path / "big.tar", [({"name": "f"}, b"z" * 5000)])
    with pytest.raises(ArchiveError, match="over the limit"):
        check_archive(tar, limit_bytes=4096)


def test_not_a_tar_is_refused(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(ArchiveError, match="tar"):
        check_archive(junk, limit_bytes=10_000)


def test_pack_directory_is_deterministic_and_round_trips(tmp_path):
    def fill(root, order):
        root.mkdir()
        for name in order:
            (root / name).write_text(name * 3)
        os.symlink("b", root / "link")

    fill(tmp_path / "one", ["a", "b", "c"])
    fill(tmp_path / "two", ["c", "a", "b"])
    os.utime(tmp_path / "two" / "a", (1, 1))
    first = pack_directory(tmp_path / "one", tmp_path / "one.tar", limit_bytes=20_000)
    second = pack_directory(tmp_path / "two", tmp_path / "two.tar", limit_bytes=20_000)
    assert first == second
    extract_archive(tmp_path / "one.tar", tmp_path / "back", limit_bytes=20_000)
    assert (tmp_path / "back" / "c").read_text() == "ccc"


def test_pack_directory_refuses_fifos_and_oversize(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(ArchiveError, match="fifo"):
        pack_directory(root, tmp_path / "o.tar", limit_bytes=20_000)
    (root / "pipe").unlink()
    (root / "big").write_bytes(b"x" * 30_000)
    with pytest.raises(ArchiveError, match="limit"):
        pack_directory(root, tmp_path / "o.tar", limit_bytes=20_000)


def test_pack_context_makes_an_archive_that_passes_the_checks(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM localhost/formnet/busybox:latest\n")
    digest, size = pack_context(ctx, tmp_path / "ctx.tar")
    assert len(digest) == 64 and size > 0
    assert "Containerfile" in check_archive(tmp_path / "ctx.tar", limit_bytes=1 << 20).names
