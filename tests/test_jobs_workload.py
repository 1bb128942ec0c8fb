"""The workload model across 3 real formd processes through the real `form` CLI: label
selectors, named capabilities with concurrency slots, region, placement keys."""

import json

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status
from test_jobs_cluster import LOOP_FOREVER, submit_wasm, wasm_context  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("workload")) as cluster:
        seed = cluster.add("a", labels=["zone=a", "gpus=1"])
        cluster.add("b", seed=seed, labels=["zone=b", "gpus=4"])
        cluster.add("c", seed=seed, labels=["zone=c"])
        ids = [n.node_id for n in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 30, "all three nodes to see each other")
        yield cluster


def final(node, job_id: str) -> dict:
    return wait_until(
        lambda: (s := status(node, job_id))["state"] in ("succeeded", "failed", "unschedulable") and s,
        60,
        f"job {job_id[:12]} to end",
    )


def test_selectors_choose_the_node_and_name_the_failed_requirement(cluster, wasm_context):  # noqa: F811
    a, b, c = cluster.nodes[:3]
    job_id = submit_wasm(a, wasm_context, "--select", "zone in (b,c)", "--select", "gpus>=2").stdout.strip()
    seen = final(c, job_id)
    assert (seen["state"], seen["node"]) == ("succeeded", b.node_id)

    job_id = submit_wasm(a, wasm_context, "--select", "zone notin (b), gpus>1", "--label", "zone=a").stdout
    seen = final(b, job_id.strip())
    assert seen["state"] == "unschedulable"
    assert sorted(seen["reasons"]) == sorted(
        [
            f"node {a.node_id[:12]}: select gpus>1: node has '1'",
            f"node {b.node_id[:12]}: label zone: needs 'a', node has 'b'; select zone notin (b): node has 'b'",
            f"node {c.node_id[:12]}: label zone: needs 'a', node has 'c'; select gpus>1: node has no such label",
        ]
    )

    refused = submit_wasm(a, wasm_context, "--select", "gpus>many", check=False)
    assert refused.returncode == 1
    assert "select 'gpus>many': > compares whole numbers" in refused.stderr
    assert json.loads(a.form("jobs", "--json").stdout)  # formd still answers
