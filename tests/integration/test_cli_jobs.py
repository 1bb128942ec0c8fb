"""`form` job commands against a real formd with small limits: the node's size limits
(formd.toml) are what the CLI and the daemon enforce, a refused submit leaves no blob behind,
and a job-id prefix that two jobs share is a clear error."""

import base64
import dataclasses
import os

import blake3
import pytest
from procs import Cluster

from cli.client import ClientError
from crdt_state.document import ClusterDocument
from crdt_state.persistence import DocumentStore
from crdt_state.signing import seal_record
from daemon.identity import load_identity
from daemon.jobs.blobstore import BlobStore
from pack_manager.jobspec import JobSpec
from pack_manager.requirements import WorkloadRequirements

pytestmark = pytest.mark.slow

LIMITS = {"max_context_bytes": "16384", "max_input_bytes": "4096"}
NOOP = b'(module (func (export "_start")))'


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("cli-jobs")) as cluster:
        yield cluster.add("a", settings=LIMITS)


def blobs_of(node) -> set[str]:
    return set(BlobStore(node.state_dir / "blobs").digests())


def context(tmp_path, size: int):
    root = tmp_path / f"ctx-{size}"
    root.mkdir()
    (root / "noop.wat").write_bytes(NOOP)
    (root / "filler").write_bytes(os.urandom(size))
    return root


def test_the_nodes_limits_refuse_big_contexts_and_inputs_and_leave_nothing_behind(node, tmp_path):
    assert node.call("job.limits") == {"max_context_bytes": 16384, "max_input_bytes": 4096}
    before = blobs_of(node)
    big = node.form(
        "submit", str(context(tmp_path, 20000)), "--kind", "wasm", "--module", "noop.wat", check=False
    )
    assert big.returncode == 1 and "16,384-byte limit" in big.stderr
    small = context(tmp_path, 100)
    (tmp_path / "in.bin").write_bytes(os.urandom(5000))
    inputs = node.form(
        "submit",
        str(small),
        "--kind",
        "wasm",
        "--module",
        "noop.wat",
        "--input",
        str(tmp_path / "in.bin"),
        check=False,
    )
    assert inputs.returncode == 1 and "4,096-byte limit" in inputs.stderr
    # Bypassing the CLI: blob.put refuses a blob over the larger limit before storing anything.
    with pytest.raises(ClientError, match="limit"):
        node.call("blob.put", {"digest": "ab" * 32, "size": 20000, "offset": 0, "data": ""})
    # A submit the daemon refuses after the upload (bad units): the upload is deleted again.
    refused = node.form(
        "submit", str(small), "--kind", "wasm", "--module", "noop.wat", "--memory", "12 parsecs", check=False
    )
    assert refused.returncode == 1 and "memory" in refused.stderr
    # An input within the blob limit but over the inputs limit: refused at submit, deleted.
    data = os.urandom(6000)
    digest = blake3.blake3(data).hexdigest()
    node.call(
        "blob.put",
        {"digest": digest, "size": len(data), "offset": 0, "data": base64.b64encode(data).decode()},
    )
    assert digest in blobs_of(node)
    with pytest.raises(ClientError, match="4,096-byte limit"):
        node.call("job.submit", {"kind": "wasm", "module": digest, "inputs": [["x", digest]]})
    assert blobs_of(node) == before
    assert node.call("job.list") == []


def test_a_prefix_two_jobs_share_is_ambiguous(node):
    node.stop()
    # Two job ids that share their first 8 hex digits (a birthday search over nonces, ~80k
    # hashes), written by this node into its own store while it is stopped.
    identity = load_identity(node.state_dir / "node.key")
    spec = JobSpec(
        kind="wasm",
        submitter=identity.node_id,
        nonce=bytes(16),
        module="ab" * 32,
        requirements=WorkloadRequirements.from_human(executor="wasm"),
    )
    packed = bytearray(spec.pack())
    at = packed.index(bytes(16))
    seen: dict[bytes, bytes] = {}
    while True:
        nonce = os.urandom(16)
        packed[at : at + 16] = nonce
        prefix = blake3.blake3(packed).digest()[:4]
        if prefix in seen and seen[prefix] != nonce:
            break
        seen[prefix] = nonce
    twins = [dataclasses.replace(spec, nonce=n) for n in (seen[prefix], nonce)]
    ids = [s.job_id().hex() for s in twins]
    assert ids[0][:8] == ids[1][:8] and ids[0] != ids[1]
    with DocumentStore(node.state_dir) as store:
        document = ClusterDocument.from_updates(store.load(), identity.node_id)
        for job_spec, job_hex in zip(twins, ids):
            document.put_local(
                "jobs",
                job_hex,
                seal_record(identity.private_key, "job", {"spec": job_spec.pack(), "submitted_ms": 1}),
            )
        for update in document.drain_local_updates():
            store.append(update, True)
    node.start()
    for command in (
        ["status", ids[0][:8]],
        ["cancel", ids[0][:8]],
        ["explain", ids[0][:8]],
        ["logs", ids[0][:8]],
    ):
        result = node.form(*command, check=False)
        assert result.returncode == 1, command
        assert result.stderr.startswith("form: ") and "ambiguous" in result.stderr, (command, result.stderr)
        assert ids[0][:16] in result.stderr and ids[1][:16] in result.stderr  # both candidates named
    for job_hex in ids:  # a longer prefix (or the whole id) picks one
        assert node.form("status", job_hex[:20], "--json").returncode == 0
