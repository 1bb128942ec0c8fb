"""Jobs end to end on 3 real formd processes on 127.0.0.1, through the real `form` CLI:
a WASM job submitted on one node runs on the node placement ranks first, status converges
everywhere, the outputs come back byte-identical on a third node; bad input changes nothing."""

import base64
import json
import os

import pytest
from procs import job_status as status
from procs import wait_until
from wasm_jobs import LOOP_FOREVER, TEXT, submit_wasm

from cli.client import ClientError
from daemon.jobs.blobstore import BlobStore
from pack_manager.context_archive import file_digest, pack_context
from pack_manager.placement import rank

pytestmark = pytest.mark.slow


def top_ranked(cluster, job_id: str) -> str:
    ids = [bytes.fromhex(n.node_id) for n in cluster.nodes[:3]]
    return rank(bytes.fromhex(job_id), ids)[0].hex()


def test_a_wasm_job_runs_on_the_top_ranked_node_only_and_results_reach_any_node(formd_cluster, wasm_context):
    a, b, c = formd_cluster.nodes[:3]
    # The job id carries a random nonce: submit until placement puts one on a node other than
    # the submitter (each earlier one is a real job too, run by a itself).
    for _ in range(20):
        job_id = submit_wasm(a, wasm_context).stdout.strip().splitlines()[-1]
        runner_id = top_ranked(formd_cluster, job_id)
        if runner_id != a.node_id:
            break
    assert runner_id != a.node_id
    runner = next(n for n in formd_cluster.nodes if n.node_id == runner_id)
    other = next(n for n in (b, c) if n is not runner)

    def succeeded_everywhere():
        return all(status(n, job_id)["state"] == "succeeded" for n in (a, b, c))

    wait_until(succeeded_everywhere, 60, "the job to be succeeded on every node")
    for node in (a, b, c):
        seen = status(node, job_id)
        assert seen["node"] == runner_id
        assert seen["attempt"] == 1
        assert seen["exit_code"] == 0
        assert [o["name"] for o in seen["outputs"]] == ["outputs.tar"]
    explained = json.loads(a.form("explain", job_id[:10], "--json").stdout)
    runs = {row["node"]: row["run"] for row in explained["nodes"]}
    assert runs[runner_id] == "succeeded"
    assert [n for n, state in runs.items() if state is not None] == [runner_id]  # nobody else wrote a run
    # The runner logs each run record it writes: a run this short writes only its result (its
    # claim waits claim_quiet_s, see daemon/jobs/loop.py); the others never claimed, ran or started it.
    assert f"job succeeded job={job_id[:12]}" in runner.log_text()
    for word in ("claimed", "running", "declined", "failed", "succeeded"):
        assert f"job {word} job={job_id[:12]}" not in a.log_text() + other.log_text()

    out = other.state_dir.parent / "result-on-other"
    other.form("result", job_id[:8], "-o", str(out))
    assert (out / "in.txt.upper").read_bytes() == TEXT.upper()
    log = other.form("logs", job_id).stdout
    assert "inputs are read-only" in log


def test_a_job_no_node_can_fit_is_unschedulable_with_reasons(formd_cluster, wasm_context):
    a, b, c = formd_cluster.nodes[:3]
    job_id = submit_wasm(b, wasm_context, "--memory", "64GiB").stdout.strip()
    wait_until(lambda: status(c, job_id)["state"] == "unschedulable", 30, "c to see the job unschedulable")
    seen = status(b, job_id)
    assert seen["state"] == "unschedulable"
    assert "memory" in seen["reason"]
    assert len(seen["reasons"]) == 3 and all("memory" in r for r in seen["reasons"])
    explained = json.loads(b.form("explain", job_id, "--json").stdout)
    assert len(explained["nodes"]) == 3
    assert all(not row["fits"] and any("memory" in r for r in row["reasons"]) for row in explained["nodes"])
    refused = submit_wasm(a, wasm_context, "--gpu", "1", "--gpu-model", "H100", check=False)
    assert refused.returncode != 0 and "gpu" in refused.stderr  # WASM has no GPUs: refused at submit


def test_bad_input_is_refused_and_writes_nothing(formd_cluster, wasm_context, tmp_path):
    a = formd_cluster.nodes[0]
    before = a.call("job.list", {})
    blobs_before = set(BlobStore(a.state_dir / "blobs").digests())
    fresh = tmp_path / "fresh"  # a context no job has used: its upload must not stay behind
    fresh.mkdir()
    (fresh / "upcase.wasm").write_bytes((wasm_context / "context" / "upcase.wasm").read_bytes())
    (fresh / "marker").write_bytes(os.urandom(16))
    huge = tmp_path / "huge"
    huge.mkdir()
    with open(huge / "big.bin", "wb") as sparse:
        sparse.truncate(257 * 1024**2)  # sparse: over the 256 MiB context limit, costs no disk
    cases = [
        ("submit", str(huge), "--kind", "wasm", "--module", "big.bin"),
        (
            "submit",
            str(wasm_context / "context"),
            "--kind",
            "wasm",
            "--module",
            "upcase.wasm",
            "--gpu-model",
            "H100",
            "--replicas",
            "0",
        ),
        ("submit", str(wasm_context / "context"), "--kind", "wasm", "--module", "../escape.wasm"),
        ("submit", str(tmp_path / "missing"), "--kind", "wasm", "--module", "upcase.wasm"),
        (
            "submit",
            str(wasm_context / "context"),
            "--kind",
            "wasm",
            "--module",
            "upcase.wasm",
            "--memory",
            "12 parsecs",
        ),
        (
            "submit",
            str(wasm_context / "context"),
            "--kind",
            "wasm",
            "--module",
            "upcase.wasm",
            "--timeout",
            "soon",
        ),
        ("submit", str(wasm_context / "context"), "--kind", "teleport"),
        ("submit", str(fresh), "--kind", "wasm", "--module", "upcase.wasm", "--memory", "12 parsecs"),
        ("submit", str(fresh), "--kind", "wasm", "--module", "upcase.wasm", "--replicas", "99"),
        ("status", "0123456789abcdef0123"),
        ("status", "abc"),
        ("status", "not-hex-at-all"),
        ("cancel", "ffffffffffff"),
        ("result", "ffffffffffff", "-o", str(tmp_path / "out")),
    ]
    for args in cases:
        result = a.form(*args, check=False)
        assert result.returncode != 0, args
        assert result.stderr.startswith("form: "), (args, result.stderr)
    assert a.call("job.list", {}) == before
    assert set(BlobStore(a.state_dir / "blobs").digests()) == blobs_before


def test_cancel_from_a_node_that_does_not_run_it_stops_the_runner(formd_cluster, tmp_path):
    a, b, c = formd_cluster.nodes[:3]
    context = tmp_path / "loop"
    context.mkdir()
    (context / "loop.wat").write_text(LOOP_FOREVER)
    job_id = a.form(
        "submit", str(context), "--kind", "wasm", "--module", "loop.wat", "--timeout", "5m"
    ).stdout.strip()
    wait_until(lambda: status(a, job_id)["state"] == "running", 30, "the job to be running")
    runner_id = status(a, job_id)["node"]
    canceller = next(n for n in (a, b, c) if n.node_id != runner_id)
    canceller.form("cancel", job_id[:12])
    wait_until(
        lambda: all(status(n, job_id)["state"] == "cancelled" for n in (a, b, c)), 30, "cancelled everywhere"
    )
    seen = status(canceller, job_id)
    assert seen["node"] == runner_id
    assert "cancel" in seen["reason"]


def test_replicas_two_run_on_two_nodes_and_are_verified(formd_cluster, wasm_context):
    a, b, c = formd_cluster.nodes[:3]
    job_id = submit_wasm(c, wasm_context, "--replicas", "2").stdout.strip()
    wait_until(lambda: status(a, job_id)["verified"], 60, "two matching replicas")
    seen = status(b, job_id)
    assert seen["state"] == "succeeded"
    replicas = seen["replicas"]
    assert len(replicas) == 2 and len({r["node"] for r in replicas}) == 2
    assert {r["state"] for r in replicas} == {"succeeded"}
    assert replicas[0]["digest"] == replicas[1]["digest"]
    ids = [bytes.fromhex(n.node_id) for n in (a, b, c)]
    assert {r["node"] for r in replicas} == {n.hex() for n in rank(bytes.fromhex(job_id), ids)[:2]}


def test_an_ambiguous_or_unknown_prefix_is_a_clear_error(formd_cluster):
    a = formd_cluster.nodes[0]
    listed = a.call("job.list", {})
    assert len(listed) >= 2
    ids = sorted(job["id"] for job in listed)
    result = a.form("status", "0" * 7 + "g", check=False)
    assert result.returncode != 0 and "prefix" in result.stderr
    unknown = next(p for p in (f"{i:08x}" for i in range(1000)) if not any(j.startswith(p) for j in ids))
    result = a.form("status", unknown, check=False)
    assert result.returncode != 0 and "no job" in result.stderr
    result = a.form("jobs", "--state", "sleeping", check=False)
    assert result.returncode != 0 and "state" in result.stderr
    done = json.loads(a.form("jobs", "--state", "succeeded", "--json").stdout)
    assert done and all(job["state"] == "succeeded" for job in done)


def test_submit_follow_streams_the_log_and_waits(formd_cluster, wasm_context):
    b = formd_cluster.nodes[1]
    result = submit_wasm(b, wasm_context, "--follow")
    lines = result.stdout.splitlines()
    assert len(lines[0]) == 64
    assert "inputs are read-only" in result.stdout
    assert lines[-1].startswith("succeeded: ")
    failing = submit_wasm(b, wasm_context, "--wait", "--cmd", "missing.txt", check=False)
    assert failing.returncode == 1
    assert failing.stdout.splitlines()[-1].startswith("failed: ")


def test_submit_many_is_all_or_nothing_and_one_request_runs_every_job(formd_cluster, wasm_context, tmp_path):
    a = formd_cluster.nodes[0]
    tar = tmp_path / "context.tar"
    pack_context(wasm_context / "context", tar)
    data = tar.read_bytes()
    digest = file_digest(tar)
    a.call(
        "blob.put",
        {"digest": digest, "size": len(data), "offset": 0, "data": base64.b64encode(data).decode()},
    )
    good = {"kind": "wasm", "context": digest, "module": "upcase.wasm", "command": ["missing.txt"]}
    before = a.call("job.list", {})
    for bad, why in (
        (dict(good, requirements={"memory": "12 parsecs"}), "jobs[1]"),
        (dict(good, context="00" * 32), "not in this node's store"),
        ("not an object", "jobs[1]"),
    ):
        with pytest.raises(ClientError) as refused:
            a.call("job.submit-many", {"jobs": [good, bad, good]})
        assert why in str(refused.value)
    with pytest.raises(ClientError):
        a.call("job.submit-many", {"jobs": []})
    assert a.call("job.list", {}) == before  # nothing written
    ids = a.call("job.submit-many", {"jobs": [good, good, good]})["ids"]
    assert len(set(ids)) == 3
    # The module exits 1 on a missing input: each job reaches a final state of its own.
    wait_until(lambda: all(status(a, j)["state"] == "failed" for j in ids), 60, "the three jobs to finish")


def test_prefer_local_inputs_runs_on_a_node_the_document_says_holds_the_inputs(
    formd_cluster, wasm_context, tmp_path
):
    a, b, c = formd_cluster.nodes[:3]
    ids = [bytes.fromhex(n.node_id) for n in (a, b, c)]

    def plain_order(job_id):
        return [n.hex() for n in rank(bytes.fromhex(job_id), ids)]

    def fresh_blobs(name):
        """A context and input no other job used: only this test's runs can hold them."""
        root = tmp_path / name
        (root / "context").mkdir(parents=True)
        (root / "context" / "upcase.wasm").write_bytes(
            (wasm_context / "context" / "upcase.wasm").read_bytes()
        )
        (root / "context" / "marker").write_bytes(os.urandom(16))
        (root / "in.txt").write_bytes(os.urandom(8).hex().encode())
        return root

    def submit_until(wanted_order, roots, *extra):
        """Submit (one at a time, each waited for, so no node is busy with an earlier one)
        until placement alone would order the job's nodes as wanted."""
        for root in roots:
            job_id = submit_wasm(a, root, *extra).stdout.strip()
            wait_until(
                lambda: all(status(n, job_id)["state"] == "succeeded" for n in (a, b, c)),
                60,
                "the job to finish",
            )
            if wanted_order(plain_order(job_id)):
                return root, job_id
        raise AssertionError("placement never gave the wanted order")

    # First b runs a plain job (placement puts it there) on blobs nobody else has run with.
    root, first = submit_until(
        lambda order: order[0] == b.node_id, (fresh_blobs(f"try{i}") for i in range(40))
    )
    assert status(a, first)["node"] == b.node_id
    # Then jobs on the same blobs that prefer holders, until one's plain order is c, b, a:
    # c holds nothing, a (the submitter) and b (it ran the first job) hold both blobs, and b
    # ranks before a: b must run it. (The earlier tries run on a or b, so c never holds.)
    _, job_id = submit_until(
        lambda order: order == [c.node_id, b.node_id, a.node_id], [root] * 40, "--prefer-local-inputs"
    )
    assert status(c, job_id)["node"] == b.node_id
    tables = [json.loads(n.form("explain", job_id, "--json").stdout) for n in (a, b, c)]
    for table in tables:  # every node computes the same ranking from the document
        assert table["prefer_local_inputs"] is True and table["blobs"] == 2
        assert [(row["node"], row["holds"]) for row in table["nodes"]] == [
            (b.node_id, 2),
            (a.node_id, 2),
            (c.node_id, 0),
        ]
