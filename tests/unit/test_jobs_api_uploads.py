"""blob.put-fd (daemon/control/jobs_api.py) against the blob sweep: an upload of bytes the store
already holds keeps them, even when the sweep deletes the held copy while the upload copies."""

import os
from types import SimpleNamespace

import trio

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
