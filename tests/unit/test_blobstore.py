"""The content-addressed blob store: verified writes, resumable fetches, limits, garbage collection."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from blake3 import blake3

from daemon.jobs.blobstore import COPY_STEP, BlobError, BlobStore


def test_put_and_read_back(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(700_000)
    digest = store.put_bytes(data)
    assert digest == blake3(data).hexdigest()
    assert store.has(digest) and store.size(digest) == len(data)
    with store.open(digest) as blob:
        assert blob.read() == data
    assert store.read_chunk(digest, 100, 50) == data[100:150]
    assert list(store.digests()) == [digest]
    assert not any((tmp_path / "blobs" / "tmp").iterdir())  # no temporary files left


def test_expected_digest_mismatch_is_refused_and_nothing_stored(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(BlobError, match="not the expected"):
        store.put_chunks([b"hello"], expected="00" * 32)
    assert list(store.digests()) == []


def test_size_limit(tmp_path):
    store = BlobStore(tmp_path, max_blob_bytes=1000)
    with pytest.raises(BlobError, match="limit"):
        store.put_bytes(b"x" * 1001)
    with pytest.raises(BlobError, match="over the"):
        store.writer("ab" * 32, 5000)
    assert list(store.digests()) == []


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "AB" * 32, "ab" * 31, "g" * 64])
def test_bad_digests_are_refused(tmp_path, bad):
    store = BlobStore(tmp_path)
    with pytest.raises(BlobError):
        store.path(bad)
    with pytest.raises(BlobError):
        store.open(bad)


def test_missing_blob_is_a_clear_error(tmp_path):
    with pytest.raises(BlobError, match="not in this store"):
        BlobStore(tmp_path).open("ab" * 32)


def test_resumable_verified_fetch(tmp_path):
    source = BlobStore(tmp_path / "a")
    data = os.urandom(300_000)
    digest = source.put_bytes(data)
    target = BlobStore(tmp_path / "b")
    first = target.writer(digest, len(data))
    first.write(source.read_chunk(digest, 0, 100_000))
    # The holder died; a new writer (another holder) resumes where the file on disk ends.
    second = target.writer(digest, len(data))
    assert second.offset == 100_000
    while not second.complete:
        second.write(source.read_chunk(digest, second.offset, 64_000))
    assert second.finish() == digest
    with target.open(digest) as blob:
        assert blob.read() == data


def test_corrupted_fetch_is_discarded(tmp_path):
    store = BlobStore(tmp_path)
    data = b"the real content"
    writer = store.writer(blake3(data).hexdigest(), len(data))
    writer.write(b"the fake content")
    with pytest.raises(BlobError, match="does not match"):
        writer.finish()
    assert not store.has(blake3(data).hexdigest()) and not writer.partial.exists()


def test_two_writers_of_one_digest_never_install_what_neither_wrote(tmp_path):
    """Two fetches of one digest share its partial file: the first to finish installs the blob;
    the other finds its partial gone (or grown) and installs nothing. An upload has its own."""
    store = BlobStore(tmp_path)
    data = os.urandom(200_000)
    digest = blake3(data).hexdigest()
    assert store.writer(digest, len(data), upload=True).partial != store.writer(digest, len(data)).partial
    first, second = store.writer(digest, len(data)), store.writer(digest, len(data))
    first.write(data)
    first.close()
    second.write(data)  # appended to the same partial file: it now holds the data twice
    with pytest.raises(BlobError, match="changed while written"):
        second.finish()
    assert not store.has(digest)
    first = store.writer(digest, len(data))
    first.write(data)
    second = store.writer(digest, len(data))  # resumes from the whole partial file
    assert first.finish() == digest
    with pytest.raises(BlobError, match="changed while written"):
        second.finish()  # its partial was installed by the first: not an empty file over the blob
    assert store.path(digest).read_bytes() == data


def test_oversending_holder_is_cut_off(tmp_path):
    store = BlobStore(tmp_path)
    writer = store.writer("ab" * 32, 4)
    with pytest.raises(BlobError, match="more than"):
        writer.write(b"12345")


def test_garbage_collection_keeps_what_is_referenced(tmp_path):
    store = BlobStore(tmp_path)
    keep = store.put_bytes(b"keep me")
    drop = store.put_bytes(b"drop me")
    assert store.collect_garbage({keep}) == [drop]
    assert store.has(keep) and not store.has(drop)


def test_putting_a_file_already_held_keeps_the_stored_blob(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    source = tmp_path / "log.txt"
    source.write_bytes(b"same log every run\n")
    digest = store.put_file(source)
    stored = os.stat(store.path(digest))
    assert store.put_file(source) == digest
    assert os.stat(store.path(digest)).st_ino == stored.st_ino  # not written and renamed again
    source.write_bytes(b"another log\n")
    other = store.put_file(source)
    with store.open(other) as blob:
        assert other != digest and blob.read() == b"another log\n"


def test_a_file_whose_digest_the_caller_computed_is_not_read_again_when_held(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    source = tmp_path / "outputs.tar"
    source.write_bytes(b"outputs")
    digest = store.put_file(source)
    source.unlink()  # were it read again, this would raise
    assert store.put_file(source, digest) == digest
    source.write_bytes(b"new outputs")
    fresh = blake3(b"new outputs").hexdigest()
    assert not store.has(fresh)
    assert store.put_file(source, fresh) == fresh  # not held: stored, hashed while written
    with store.open(fresh) as blob:
        assert blob.read() == b"new outputs"


def test_stale_temporaries_go_unless_their_fetch_is_still_wanted(tmp_path):
    store = BlobStore(tmp_path)
    wanted, abandoned, fresh = "aa" * 32, "bb" * 32, "cc" * 32
    for digest in (wanted, abandoned, fresh):
        store.partial_path(digest).write_bytes(b"part of it")
    crashed_copy = tmp_path / "tmp" / "put-123-abcdef"
    crashed_copy.write_bytes(b"cut short")
    old = time.time() - 7200
    for path in (store.partial_path(wanted), store.partial_path(abandoned), crashed_copy):
        os.utime(path, (old, old))
    assert store.remove_stale_temporaries(3600, keep=lambda digest: digest == wanted) == 2
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [f"{wanted}.partial", f"{fresh}.partial"]


def test_put_fd_copies_a_regular_file_from_its_start_and_refuses_the_rest(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "in").write_bytes(data)
    with open(tmp_path / "in", "rb") as handle:
        handle.seek(1000)  # the descriptor's position does not matter
        assert store.put_fd(handle.fileno(), limit=len(data)) == (blake3(data).hexdigest(), len(data))
        with pytest.raises(BlobError, match="over this node's"):
            store.put_fd(handle.fileno(), limit=len(data) - 1)
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(BlobError, match="directory, not a regular file"):
            store.put_fd(directory, limit=10)
    finally:
        os.close(directory)
    assert list(store.digests()) == [blake3(data).hexdigest()]


def _put_fd_from(store: BlobStore, path) -> tuple[str, int]:
    with open(path, "rb") as handle:
        return store.put_fd(handle.fileno(), limit=1 << 30)


@pytest.mark.parametrize("where", ["same file system", "tmpfs"])
def test_put_fd_copies_across_several_steps_on_one_or_two_file_systems(tmp_path, where):
    """copy_file_range within one file system; across two (tmpfs to the store) the kernel
    refuses it and sendfile copies instead: the stored blob is the file either way."""
    folder = tmp_path if where == "same file system" else Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        data = os.urandom(2 * COPY_STEP + 12345)
        (folder / "in").write_bytes(data)
        store = BlobStore(tmp_path / "blobs")
        digest, size = _put_fd_from(store, folder / "in")
        assert (digest, size) == (blake3(data).hexdigest(), len(data))
        assert store.path(digest).read_bytes() == data
        assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder)


def test_put_fd_reads_files_the_kernel_copies_as_empty(tmp_path):
    """/proc files report size 0 and copy_file_range copies nothing from them."""
    store = BlobStore(tmp_path / "blobs")
    content = Path("/proc/version").read_bytes()
    assert content
    assert _put_fd_from(store, "/proc/version") == (blake3(content).hexdigest(), len(content))
    with (
        open("/proc/version", "rb") as handle,
        pytest.raises(BlobError, match="larger than the 10-byte limit"),
    ):
        store.put_fd(handle.fileno(), limit=10)
    assert list(store.digests()) == [blake3(content).hexdigest()]
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_a_file_put_again_leaves_the_stored_blob_and_its_copy_goes(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "in").write_bytes(data)
    digest, _ = _put_fd_from(store, tmp_path / "in")
    stored = store.path(digest).stat().st_ino
    assert _put_fd_from(store, tmp_path / "in") == (digest, len(data))
    assert store.path(digest).stat().st_ino == stored  # not replaced by the second copy
    deadline = time.monotonic() + 10
    while any((tmp_path / "blobs" / "tmp").iterdir()):  # the copy is deleted in the background
        assert time.monotonic() < deadline, "the second copy was never deleted"
        time.sleep(0.01)
    assert store.path(digest).read_bytes() == data
