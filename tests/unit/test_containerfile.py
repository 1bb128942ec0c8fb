"""The images a Containerfile builds FROM (pack_manager/containerfile.py), read from a context
tarball (pack_manager/context_archive.text_member)."""

import io
import tarfile

import pytest

from pack_manager.containerfile import base_images
from pack_manager.context_archive import MAX_TEXT_MEMBER, text_member


@pytest.mark.parametrize(
    "text, images",
    [
        ("FROM localhost/base:1\nRUN true\n", ["localhost/base:1"]),
        (
            "from docker.io/library/alpine:3.20 as build\nFROM build\nCOPY --from=build /x /x\n",
            ["docker.io/library/alpine:3.20"],
        ),
        ("FROM --platform=linux/amd64 a:1 AS one\nFROM b:2 AS two\nFROM one\nFROM a:1\n", ["a:1", "b:2"]),
        ("# FROM commented:1\nFROM scratch\nCOPY x /x\n", []),
        ("ARG V=1\nFROM base:$V\nFROM other:${V}\n", []),
        ("FROM \\\n  continued:7 \\\n  AS c\nRUN echo\n", ["continued:7"]),
        ("RUN echo FROM not-an-instruction\n", []),
        ("FROM\n", []),
        ("", []),
    ],
)
def test_base_images(text, images):
    assert base_images(text) == images


def _context(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "context.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_the_containerfile_is_read_from_the_context_tarball(tmp_path):
    context = _context(tmp_path, {"Containerfile": b"FROM a:1\n", "sub/Build": b"FROM b:2\n"})
    assert text_member(context, "Containerfile") == "FROM a:1\n"
    assert text_member(context, "./sub/Build") == "FROM b:2\n"
    assert text_member(context, "missing") is None
    big = _context(tmp_path, {"Containerfile": b"#" * (MAX_TEXT_MEMBER + 1)})
    assert text_member(big, "Containerfile") is None
    (tmp_path / "garbage").write_bytes(b"not a tar")
    assert text_member(tmp_path / "garbage", "Containerfile") is None
