"""Uploads (daemon/control/jobs_api.py) against what runs beside them: blob.put-fd of bytes the
store already holds keeps them though the sweep deletes the held copy meanwhile; blob.put of one
blob from two clients at once stores it whole."""

import os
from types import SimpleNamespace

import trio
from blake3 import blake3

from daemon.control.jobs_api import JobsApi
from daemon.jobs.blobstore import BlobStore
from pack_manager.executors.base import ExecutorLimits


class SweptDuringCopy(BlobStore):
    """The sweep runs in formd's trio thread while put_fd copies in a worker thread: here it
    deletes the held blob once, after the copy found it held and dropped its own."""

    swept = False

    def put_fd(self, fd: int, limit: int) -> tuple[str, int]:
        digest, size = super().put_fd(fd, limit)
        if not self.swept:
            self.swept = self.delete(digest)
        return digest, size


def test_an_upload_of_a_held_blob_swept_meanwhile_is_stored_again(tmp_path):
    store = SweptDuringCopy(tmp_path / "blobs")
    data = os.urandom(300_000)
    held = store.put_bytes(data)  # held, unnamed: what the sweep takes after a retention period
    api = JobsApi(SimpleNamespace(blobs=store, limits=ExecutorLimits(), pending_uploads={}))
    source = tmp_path / "input"
    source.write_bytes(data)

    async def upload():
        with open(source, "rb") as f:
            return await api.blob_put_fd({}, f.fileno())

    reply = trio.run(upload)
    assert store.swept  # the sweep did delete it mid-upload
    assert reply == {"digest": held, "size": len(data)}
    assert store.has(held) and store.path(held).read_bytes() == data
    assert held in api.uploads  # kept for the submit that names it


async def put_all(api: JobsApi, digest: str, data: bytes, piece: int, started: trio.Event | None = None):
    """Upload as the HTTPS API does: pieces in order from offset 0, resuming where told."""
    offset, reply = 0, None
    while True:
        reply = await api.blob_put(
            {"digest": digest, "size": len(data), "offset": offset, "data": data[offset : offset + piece]}
        )
        if started is not None:
            started.set()
        if reply["complete"]:
            return reply
        offset = reply["offset"] if reply["offset"] != offset else offset + piece


def test_two_uploads_of_one_blob_at_once_store_it_whole(tmp_path):
    """Two clients upload the same file at the same time: one finishes the blob (fsync and
    install in a worker thread) while the other's next piece arrives. Both are told it is
    complete and the stored blob is the file, never a partial or empty one."""
    store = BlobStore(tmp_path / "blobs")
    api = JobsApi(SimpleNamespace(blobs=store, limits=ExecutorLimits(), pending_uploads={}))
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = blake3(data).hexdigest()

    async def both():
        replies = []
        async with trio.open_nursery() as nursery:
            for piece in (512 * 1024, 700 * 1024):

                async def one(piece=piece):
                    replies.append(await put_all(api, digest, data, piece))

                nursery.start_soon(one)
        return replies

    for _ in range(20):  # the finishing window is short: try it several times
        store.delete(digest)
        replies = trio.run(both)
        assert [r["complete"] for r in replies] == [True, True]
        assert store.path(digest).read_bytes() == data
