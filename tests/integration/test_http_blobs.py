"""Streamed blob transfers over the HTTPS API against a real formd: an interrupted upload
resumes where the node says it stopped, an empty file goes up, a body that does not match its
digest is refused and nothing is stored, and a download checks what it wrote."""

import itertools
import os
from contextlib import contextmanager

import pytest
from procs import Cluster, wait_until

from cli import remote_blobs
from cli.remote import RemoteError, RemoteTarget, load_key
from cli.remote_blobs import download, upload
from pack_manager.context_archive import file_digest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-blobs")
    with Cluster(root / "nodes") as cluster:
        a = cluster.add("a")
        wait_until(lambda: len(a.nodes()) == 1, 30, "the node to be up")
        key = root / "client.key"
        a.grant_new_client_key(key, "submit")
        remote = RemoteTarget(a.http_url, load_key(key), a.call("status")["tls_fingerprint"])
        yield a, remote
        remote.close()


def test_an_interrupted_upload_resumes_from_the_offset_the_node_holds(target, tmp_path, monkeypatch):
    node, remote = target
    moves: list[int] = []  # what the progress bar is told, in order

    @contextmanager
    def bar(description, size, *, as_json=False):
        yield moves.append

    monkeypatch.setattr(remote_blobs, "transfer_bar", bar)
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    digest = file_digest(path)
    cut = 700_001  # not on a piece boundary: the node cannot pick it up by itself
    first = remote.request(
        "PUT", f"/v1/blobs/{digest}?size={len(data)}", stream_body=iter([data[:cut]]), digest="stream"
    )
    assert first.status_code == 200 and first.json() == {"offset": cut, "complete": False}
    assert upload(remote, path) == digest
    positions = list(itertools.accumulate(moves))
    assert positions[-1] == len(data) and max(positions) == len(data)  # the bar never passes 100 %
    download(remote, digest, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data


def test_an_empty_file_goes_up_and_comes_back(target, tmp_path):
    _, remote = target
    path = tmp_path / "empty"
    path.write_bytes(b"")
    digest = upload(remote, path)
    download(remote, digest, tmp_path / "empty.back")
    assert (tmp_path / "empty.back").read_bytes() == b""


def test_a_body_that_does_not_match_its_digest_is_refused_and_not_stored(target, tmp_path):
    node, remote = target
    claimed = file_digest_of(b"the bytes the digest names", tmp_path)
    response = remote.request(
        "PUT",
        f"/v1/blobs/{claimed}?size=26",
        stream_body=iter([b"other bytes of length 26!!"]),
        digest="stream",
    )
    assert response.status_code == 400 and response.json()["error"]
    with pytest.raises(RemoteError):
        download(remote, claimed, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert node.running()


def file_digest_of(data: bytes, folder) -> str:
    path = folder / "named.bin"
    path.write_bytes(data)
    return file_digest(path)
