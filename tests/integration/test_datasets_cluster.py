"""Compute-to-data on 3 real formd processes with WASM jobs, through the real `form` CLI: a
dataset added on A is listed on B and C; a job submitted on C with --dataset runs on A even
when the ranking puts another node first, and its outputs come back on C; B and C never hold a
byte of the dataset and a direct fetch of it is refused; policies refuse with their reason;
the output cap holds; no run leaves anything behind, whatever its end."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import trio
from procs import all_see, compile_wasi, wait_until
from procs import job_status as status

from cli.client import ClientError
from cli.remote import RemoteError, RemoteTarget, load_key
from cli.remote_blobs import download
from daemon.jobs.blobfetch import FetchError, fetch_blob
from daemon.jobs.blobstore import BlobStore
from daemon.jobs.dataset_store import DatasetStore
from daemon.transport.keyring import Keyring
from daemon.transport.tcp import NetTransport
from pack_manager.context_archive import pack_context
from pack_manager.placement import rank

pytestmark = pytest.mark.slow

MARKER = b"patient-7f3e9c-secret"
ROWS = b"".join(b"%d,%s,%d\n" % (i, MARKER, i * 7) for i in range(500))

# argv: MODE (count | dump | spin) DATASET. Proves the dataset is read-only first.
PROGRAM = r"""
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "count";
    const char *name = argc > 2 ? argv[2] : "patients";
    char path[256];
    snprintf(path, sizeof path, "/data/datasets/%s/probe", name);
    FILE *probe = fopen(path, "w");
    if (probe) { fclose(probe); fprintf(stderr, "dataset is writable\n"); return 2; }
    printf("dataset is read-only\n");
    fflush(stdout);
    if (!strcmp(mode, "spin")) { volatile unsigned long i = 0; for (;;) i++; }
    if (!strcmp(mode, "fail")) { fprintf(stderr, "failing on purpose\n"); return 3; }
    snprintf(path, sizeof path, "/data/datasets/%s/records.csv", name);
    FILE *in = fopen(path, "rb");
    if (!in) { fprintf(stderr, "cannot open %s\n", path); return 1; }
    int dump = !strcmp(mode, "dump");
    FILE *out = fopen(dump ? "/data/outputs/copy.csv" : "/data/outputs/count.txt", "wb");
    long lines = 0;
    int c;
    while ((c = fgetc(in)) != EOF) { if (c == '\n') lines++; if (dump) fputc(c, out); }
    if (!dump) fprintf(out, "%ld\n", lines);
    fclose(in);
    fclose(out);
    printf("counted %ld records\n", lines);
    return 0;
}
"""


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    root = tmp_path_factory.mktemp("algorithm")
    (root / "context").mkdir()
    (root / "program.c").write_text(PROGRAM)
    compile_wasi(root / "program.c", root / "context" / "reader.wasm")
    return root / "context"


@pytest.fixture(scope="module")
def patients(formd_cluster, tmp_path_factory):
    """The dataset `patients` on A: a directory of two files."""
    data = tmp_path_factory.mktemp("hospital") / "patients"
    (data / "notes").mkdir(parents=True)
    (data / "records.csv").write_bytes(ROWS)
    (data / "notes" / "readme.txt").write_bytes(b"about " + MARKER + b"\n")
    a = formd_cluster.nodes[0]
    a.form("dataset", "add", "patients", str(data), "--description", "synthetic patient rows")
    return data


def submit(node, context: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return node.form("submit", str(context), "--kind", "wasm", "--module", "reader.wasm", *args, check=check)


def job_id_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1]


def final(node, job_id: str, timeout: float = 60) -> dict:
    return wait_until(
        lambda: (
            (s := status(node, job_id))["state"] in ("succeeded", "failed", "cancelled", "timed_out") and s
        ),
        timeout,
        f"job {job_id[:12]} to end",
    )


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def holds_marker(root: Path) -> list[Path]:
    found = []
    for path in files_under(root):
        try:
            if MARKER in path.read_bytes():
                found.append(path)
        except OSError:
            pass
    return found


def work_leftovers(node) -> list[Path]:
    work = node.state_dir / "work"
    return list(work.iterdir()) if work.exists() else []


def test_a_dataset_added_on_a_is_listed_on_b_and_c(formd_cluster, patients):
    a, b, c = formd_cluster.nodes
    for node in (b, c):
        listed = wait_until(
            lambda node=node: [
                d for d in json.loads(node.form("datasets", "--json").stdout) if d["name"] == "patients"
            ],
            30,
            f"{node.name} to list the dataset",
        )
        assert [h["node"] for h in listed[0]["holders"]] == [a.node_id]
        assert listed[0]["files"] == 2
        assert listed[0]["size"] == len(ROWS) + len(b"about " + MARKER + b"\n")
        assert listed[0]["description"] == "synthetic patient rows"
    assert "patients" in c.form("datasets").stdout


def test_a_job_with_a_dataset_runs_on_its_holder_and_results_come_back(
    formd_cluster, patients, context, tmp_path
):
    a, b, c = formd_cluster.nodes
    ids = [bytes.fromhex(n.node_id) for n in formd_cluster.nodes]
    # Submit until the ranking puts another node first: the dataset still keeps it on A.
    for _ in range(20):
        job_id = job_id_of(submit(c, context, "--dataset", "patients", "--cmd", "count patients"))
        if rank(bytes.fromhex(job_id), ids)[0].hex() != a.node_id:
            break
    assert rank(bytes.fromhex(job_id), ids)[0].hex() != a.node_id
    seen = final(c, job_id)
    assert seen["state"] == "succeeded", seen
    assert seen["node"] == a.node_id
    out = tmp_path / "out"
    c.form("result", job_id, "-o", str(out))
    assert (out / "count.txt").read_text() == "500\n"
    log = c.form("logs", job_id).stdout
    assert "dataset is read-only" in log and "counted 500 records" in log
    explained = json.loads(c.form("explain", job_id, "--json").stdout)
    reasons = {row["node"]: row["reasons"] for row in explained["nodes"]}
    assert reasons[a.node_id] == []
    for node in (b, c):
        assert any("dataset patients: not held here" in r for r in reasons[node.node_id])
    # Nothing of the dataset on B or C (state dirs: blob stores, work dirs, document), nor in
    # A's blob store: it was mounted, never copied.
    for node in (b, c):
        assert holds_marker(node.state_dir) == []
    assert holds_marker(a.state_dir / "blobs") == []
    assert work_leftovers(a) == []


def test_a_direct_fetch_of_the_dataset_is_refused(formd_cluster, patients):
    a, b, c = formd_cluster.nodes
    digest = json.loads(b.form("datasets", "--json").stdout)[0]["digest"]
    with pytest.raises(ClientError, match="belongs to a dataset"):
        b.call("blob.read", {"digest": digest, "offset": 0, "length": 100})
    manifest = DatasetStore(a.state_dir).get("patients")
    assert manifest is not None
    file_digests = [entry.digest for entry in manifest.files]
    with pytest.raises(ClientError, match="belongs to a dataset"):
        a.call("blob.read", {"digest": file_digests[0], "offset": 0, "length": 100})
    for node, wanted in ((a, file_digests[0]), (b, digest)):
        with pytest.raises(ClientError, match="belongs to a dataset"):
            node.call("blob.open", {"digest": wanted})

    async def fetch_from_a() -> list[str]:
        # A peer with the cluster key asks A itself for every piece of the dataset.
        transport = NetTransport(Keyring.load(a.key_file), "127.0.0.1:0")
        reasons = []

        async def ignore(sender, payload):
            return None

        async with trio.open_nursery() as nursery:
            await nursery.start(transport.serve, ignore)
            mine = BlobStore(Path(os.environ.get("TMPDIR", "/tmp")) / f"thief-{os.getpid()}")
            for wanted in [digest, *file_digests]:
                with pytest.raises(FetchError) as refused:
                    await fetch_blob(mine, transport, wanted, [a.address], timeout=5)
                reasons.append(str(refused.value))
                assert not mine.has(wanted)
            nursery.cancel_scope.cancel()
        return reasons

    reasons = trio.run(fetch_from_a)
    assert all("belongs to a dataset" in r for r in reasons), reasons
    assert "dataset blob refused to a peer" in a.log_text()
    assert "dataset blob refused to a client" in b.log_text()


def test_policies_refuse_with_their_reason_and_nothing_runs(formd_cluster, patients, context, tmp_path):
    a, b, c = formd_cluster.nodes
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("another algorithm")
    other_digest, _ = pack_context(other, tmp_path / "other.tar")
    # Same content under another name, its own policy: only another algorithm, only node B.
    a.form("dataset", "add", "guarded", str(patients), "--allow-algorithm", other_digest)
    a.form("dataset", "add", "b-only", str(patients), "--allow-client", b.node_id)
    wait_until(
        lambda: {"guarded", "b-only"} <= {d["name"] for d in json.loads(c.form("datasets", "--json").stdout)},
        30,
        "c to list the guarded datasets",
    )
    refused = final(c, job_id_of(submit(c, context, "--dataset", "guarded", "--cmd", "count guarded")))
    assert refused["state"] == "failed"
    assert "refused by dataset policy" in refused["reason"] and "algorithm" in refused["reason"]
    assert refused["outputs"] == [] and refused["log"] is None  # nothing ran
    refused = final(c, job_id_of(submit(c, context, "--dataset", "b-only", "--cmd", "count b-only")))
    assert refused["state"] == "failed"
    assert f"client {c.node_id[:12]} is not allowed" in refused["reason"]
    # The allowed client and the allowed algorithm do run.
    allowed = final(b, job_id_of(submit(b, context, "--dataset", "b-only", "--cmd", "count b-only")))
    assert allowed["state"] == "succeeded", allowed
    my_digest, _ = pack_context(context, tmp_path / "mine.tar")
    a.form("dataset", "add", "guarded", str(patients), "--allow-algorithm", my_digest)
    wait_until(
        lambda: (
            my_digest
            in [
                d["holders"][0]["allow_algorithms"]
                for d in json.loads(c.form("datasets", "--json").stdout)
                if d["name"] == "guarded"
            ][0]
        ),
        30,
        "c to see the new policy",
    )
    allowed = final(c, job_id_of(submit(c, context, "--dataset", "guarded", "--cmd", "count guarded")))
    assert allowed["state"] == "succeeded", allowed
    assert work_leftovers(a) == []


def test_the_output_cap_holds(formd_cluster, patients, context, tmp_path):
    a, b, c = formd_cluster.nodes
    a.form(
        "dataset", "add", "capped", str(patients), "--max-output", "12KiB"
    )  # one small file packs to 10 KiB
    wait_until(
        lambda: "capped" in {d["name"] for d in json.loads(c.form("datasets", "--json").stdout)},
        30,
        "c to list the capped dataset",
    )
    over = final(c, job_id_of(submit(c, context, "--dataset", "capped", "--cmd", "dump capped")))
    assert over["state"] == "failed"
    assert "output cap" in over["reason"] and "12.0 KiB" in over["reason"]
    assert over["outputs"] == [] and over["log"] is None
    c.form("result", over["id"], "-o", str(tmp_path / "none"))
    assert list((tmp_path / "none").iterdir()) == []  # nothing was published to fetch
    under = final(c, job_id_of(submit(c, context, "--dataset", "capped", "--cmd", "count capped")))
    assert under["state"] == "succeeded", under
    for node in (b, c):
        assert holds_marker(node.state_dir) == []
    assert holds_marker(a.state_dir / "blobs") == []


def test_nothing_is_left_after_any_end(formd_cluster, patients, context):
    a, b, c = formd_cluster.nodes
    failed = final(c, job_id_of(submit(c, context, "--dataset", "patients", "--cmd", "fail patients")))
    assert failed["state"] == "failed" and "code 3" in failed["reason"]
    assert work_leftovers(a) == []
    timed = final(
        c, job_id_of(submit(c, context, "--dataset", "patients", "--cmd", "spin patients", "--timeout", "2s"))
    )
    assert timed["state"] == "timed_out"
    assert work_leftovers(a) == []
    spinning = job_id_of(submit(c, context, "--dataset", "patients", "--cmd", "spin patients"))
    wait_until(lambda: status(c, spinning)["state"] == "running", 30, "the job to run")
    c.form("cancel", spinning)
    assert final(c, spinning)["state"] == "cancelled"
    assert work_leftovers(a) == []
    # A crash: A is killed mid-run and started again; the job is cancelled once it runs again.
    crashing = job_id_of(submit(c, context, "--dataset", "patients", "--cmd", "spin patients"))
    wait_until(lambda: work_leftovers(a), 30, "the run to start on a")
    a.kill()
    left = work_leftovers(a)
    assert left != []  # what the killed process left
    a.start()
    wait_until(lambda: not any(p.exists() for p in left), 30, "the killed run's work dir to go")
    c.form("cancel", crashing)
    assert final(c, crashing)["state"] == "cancelled"
    wait_until(lambda: work_leftovers(a) == [], 30, "a's work dir to be empty")
    wait_until(
        lambda: all_see(formd_cluster.nodes, [n.node_id for n in formd_cluster.nodes]),
        30,
        "the cluster to be whole",
    )


def test_bad_dataset_requests_are_refused_and_change_nothing(formd_cluster, patients, context, tmp_path):
    a, b, c = formd_cluster.nodes
    before = json.loads(c.form("datasets", "--json").stdout)
    other = tmp_path / "other"
    other.mkdir()
    (other / "records.csv").write_bytes(b"different content\n")
    for node, params, fragment in [
        (a, {"name": "x", "path": "relative/dir"}, "absolute"),
        (a, {"name": "x", "path": str(tmp_path / "missing")}, "No such file"),
        (a, {"name": "bad name", "path": str(other)}, "dataset name"),
        (a, {"name": "x", "path": str(other), "max_output": "lots"}, "max_output"),
        (a, {"name": "x", "path": str(other), "allow_clients": ["me"]}, "allow_clients"),
        (b, {"name": "patients", "path": str(other)}, "other content"),
    ]:
        with pytest.raises(ClientError, match=fragment):
            node.call("dataset.add", params)
    with pytest.raises(ClientError, match="not held on this node"):
        b.call("dataset.remove", {"name": "patients"})
    refused = submit(c, context, "--dataset", "nowhere", check=False)
    assert refused.returncode == 1 and "no node holds dataset nowhere" in refused.stderr
    refused = c.form("submit", str(context), "--kind", "build", "--dataset", "patients", check=False)
    assert refused.returncode == 1 and "build job cannot read datasets" in refused.stderr
    assert json.loads(c.form("datasets", "--json").stdout) == before
    assert all(node.running() for node in formd_cluster.nodes)


def test_a_removed_dataset_is_no_longer_offered(formd_cluster, patients, context):
    a, b, c = formd_cluster.nodes
    a.form("dataset", "add", "leaving", str(patients))
    wait_until(lambda: "leaving" in c.form("datasets").stdout, 30, "c to list the dataset")
    a.form("dataset", "remove", "leaving")
    wait_until(lambda: "leaving" not in c.form("datasets").stdout, 30, "c to drop the dataset")
    refused = submit(c, context, "--dataset", "leaving", check=False)
    assert refused.returncode == 1 and "no node holds dataset leaving" in refused.stderr
    assert patients.exists()  # the owner's files are left alone


def test_over_https_the_client_key_is_the_client_and_the_dataset_is_not_downloadable(
    formd_cluster, patients, context, tmp_path
):
    a, b, c = formd_cluster.nodes
    key = tmp_path / "client.key"
    public = b.grant_new_client_key(key, "submit")
    fingerprint = b.call("status")["tls_fingerprint"]
    a.form("dataset", "add", "for-key", str(patients), "--allow-client", public)
    wait_until(lambda: "for-key" in b.form("datasets").stdout, 30, "b to list the dataset")
    # The key may use it from any node's API; node B's own socket may not.
    remote = b.form_remote(
        str(key),
        fingerprint,
        "submit",
        str(context),
        "--kind",
        "wasm",
        "--module",
        "reader.wasm",
        "--dataset",
        "for-key",
        "--cmd",
        "count for-key",
    )
    allowed = final(b, job_id_of(remote))
    assert allowed["state"] == "succeeded" and allowed["node"] == a.node_id, allowed
    refused = final(b, job_id_of(submit(b, context, "--dataset", "for-key", "--cmd", "count for-key")))
    assert refused["state"] == "failed" and f"client {b.node_id[:12]} is not allowed" in refused["reason"]
    digest = [d for d in json.loads(b.form("datasets", "--json").stdout) if d["name"] == "for-key"][0][
        "digest"
    ]
    target = RemoteTarget(b.http_url, load_key(key), fingerprint)
    try:
        with pytest.raises(RemoteError, match="belongs to a dataset"):
            download(target, digest, tmp_path / "stolen")
    finally:
        target.close()
    assert not (tmp_path / "stolen").exists() or (tmp_path / "stolen").read_bytes() == b""
