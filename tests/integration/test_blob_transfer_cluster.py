"""Data at disk speed with real formd processes: an input passed to formd as an open file (no
base64), run on another node, its outputs streamed to a third node and handed to `form`
open; bad files passed are clear errors; a fetch resumes from a partial file on another
holder when the first holder is dead."""

import os
import socket
import subprocess
from pathlib import Path

import blake3
import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status
from wasm_jobs import WASM_DIR, submit_wasm

from cli.client import ClientError, Connection
from daemon.jobs.blobstore import BlobStore

pytestmark = pytest.mark.slow

SIZE = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def transfer_cluster(tmp_path_factory):
    """a; b labelled role=runner (where the jobs run); b and c labelled keeps=yes (replicas)."""
    with Cluster(tmp_path_factory.mktemp("data")) as cluster:
        a = cluster.add("a")
        cluster.add("b", seed=a, labels=["role=runner", "keeps=yes"])
        cluster.add("c", seed=a, labels=["keeps=yes"])
        ids = [n.node_id for n in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 30, "all three nodes to see each other")
        yield cluster


@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    """upcase.wasm in context/, and in.bin: SIZE random bytes."""
    root = tmp_path_factory.mktemp("upcase")
    subprocess.run(["bash", str(WASM_DIR / "build.sh"), str(root / "context")], check=True)
    data = os.urandom(SIZE)
    (root / "in.bin").write_bytes(data)
    return root, data


def submit(node, root: Path, *extra: str) -> str:
    return submit_wasm(node, root, "--wait", *extra, input_name="in.bin").stdout.splitlines()[0]


def blob_digests(node) -> set[str]:
    return set(BlobStore(node.state_dir / "blobs").digests())


def received(node) -> int:
    return node.call("status")["bytes_received"]


def test_an_input_passed_open_runs_on_another_node_and_the_result_reaches_a_third(
    transfer_cluster, big_input
):
    a, b, c = transfer_cluster.nodes
    root, data = big_input
    job_id = submit(a, root, "--label", "role=runner")
    seen = status(a, job_id)
    assert seen["state"] == "succeeded", seen
    assert seen["node"] == b.node_id
    # formd hashed the input while storing it: the digest it named is the file's.
    assert blake3.blake3(data).hexdigest() in blob_digests(a)

    out = root / "out"
    c.form("result", job_id, "-o", str(out))
    assert (out / "in.bin.upper").read_bytes() == data.upper()
    log = c.form("logs", job_id).stdout  # the stored log, handed over open
    assert f"converted {SIZE} bytes" in log
    # From an offset inside the stored log too (what `logs --follow` does after a live part).
    with Connection(c.socket) as connection:
        reply, files = connection.call_files("job.log", {"job": job_id, "offset": 5, "as_file": True})
    with os.fdopen(files[0], "rb") as stored:
        assert reply["done"] and reply["size"] == len(stored.read()) and reply["offset"] == 5


def test_bad_files_passed_are_clear_errors_and_change_nothing(transfer_cluster, tmp_path):
    a = transfer_cluster.nodes[0]
    before = blob_digests(a)
    (tmp_path / "file").write_bytes(b"some bytes")
    read_end, write_end = os.pipe()
    write_only = os.open(tmp_path / "file", os.O_WRONLY)
    directory = os.open(tmp_path, os.O_RDONLY)
    listening = socket.socket(socket.AF_UNIX)
    cases = [
        ([], "takes one open file"),
        ([directory], "is a directory, not a regular file"),
        ([read_end], "is a pipe, not a regular file"),
        ([listening.fileno()], "is a socket, not a regular file"),
        ([write_only], "not open for reading"),
        ([directory, write_only], "2 came with it"),
    ]
    try:
        with Connection(a.socket) as connection:
            for files, reason in cases:
                with pytest.raises(ClientError, match=reason):
                    connection.call_files("blob.put-fd", {}, files)
            # The connection still serves, and so does formd.
            assert connection.call("job.limits")["max_input_bytes"] > 0
            with pytest.raises(ClientError, match="not in this store"):
                connection.call_files("blob.open", {"digest": "ab" * 32})
            with pytest.raises(ClientError, match="not a blake3 hex digest"):
                connection.call_files("blob.open", {"digest": "../../etc/passwd"})
    finally:
        for fd in (read_end, write_end, write_only, directory):
            os.close(fd)
        listening.close()
    missing = a.form(
        "submit", str(tmp_path), "--kind", "wasm", "--module", "x", "--input", "/nonexistent", check=False
    )
    assert missing.returncode == 1 and "input /nonexistent is not a file" in missing.stderr
    assert blob_digests(a) == before
    assert a.call("status")["id"] == a.node_id


def test_a_fetch_resumes_from_its_partial_file_on_another_holder_when_the_first_is_dead(
    transfer_cluster, big_input
):
    a, b, c = transfer_cluster.nodes
    root, data = big_input
    job_id = submit(a, root, "--label", "keeps=yes", "--replicas", "2")
    seen = status(a, job_id)
    assert seen["state"] == "succeeded", seen
    assert {r["node"] for r in seen["replicas"]} == {b.node_id, c.node_id}
    outputs = next(o for o in seen["outputs"] if o["name"] == "outputs.tar")
    digest, size = outputs["digest"], outputs["size"]
    holder = b if seen["node"] == b.node_id else c  # asked first
    # A fetch that got two thirds of the way before it stopped: its partial file on a.
    whole = BlobStore(holder.state_dir / "blobs").path(digest).read_bytes()
    (a.state_dir / "blobs" / "tmp" / f"{digest}.partial").write_bytes(whole[: size * 2 // 3])
    holder.kill()
    try:
        start = received(a)
        a.form("result", job_id, "-o", str(root / "resumed"))
        assert (root / "resumed" / "in.bin.upper").read_bytes() == data.upper()
        # Only the missing third crossed the network (plus a little gossip).
        assert received(a) - start < size // 2
    finally:
        holder.start()
