"""Kill -9 of the runner mid-job on real formd processes: the next ranked live node takes the
job over with attempt 2 and finishes it; the killed node, restarted, marks its old claim
yielded instead of running the job again."""

import json

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status
from wasm_jobs import sleeper_context

from pack_manager.placement import rank

pytestmark = pytest.mark.slow


def test_kill9_of_the_runner_moves_the_job_to_the_next_ranked_node(tmp_path):
    context = sleeper_context(tmp_path)
    with Cluster(tmp_path / "nodes") as cluster:
        a = cluster.add("a")
        b = cluster.add("b", seed=a)
        c = cluster.add("c", seed=a)
        nodes = (a, b, c)
        wait_until(lambda: all_see(nodes, [n.node_id for n in nodes]), 30, "the cluster to be up")
        ids = [bytes.fromhex(n.node_id) for n in nodes]
        for _ in range(20):  # the submitter holds the context: the runner must be another node
            job_id = a.form(
                "submit", str(context), "--kind", "wasm", "--module", "sleeper.wasm", "--cmd", "8"
            ).stdout.strip()
            order = [n.hex() for n in rank(bytes.fromhex(job_id), ids)]
            if order[0] != a.node_id:
                break
            a.form("cancel", job_id)
        assert order[0] != a.node_id
        runner = next(n for n in nodes if n.node_id == order[0])
        successor = order[1]
        wait_until(lambda: status(a, job_id)["state"] == "running", 30, "the job to be running")
        # Its log, live from the runner while it runs, on a node that does not run it.
        wait_until(lambda: "sleeping 8 s" in a.form("logs", job_id).stdout, 20, "the live log on a")
        runner.kill()
        survivors = [n for n in nodes if n is not runner]
        wait_until(
            lambda: all(status(n, job_id)["state"] == "succeeded" for n in survivors),
            60,
            "the successor to finish it",
        )
        for node in survivors:
            seen = status(node, job_id)
            assert seen["node"] == successor
            assert seen["attempt"] == 2
        rows = json.loads(a.form("explain", job_id, "--json").stdout)["nodes"]
        runs = {row["node"]: row for row in rows}
        assert [n for n, row in runs.items() if row["run"] == "succeeded"] == [successor]
        assert runs[runner.node_id]["run"] == "claimed" or runs[runner.node_id]["run"] == "running"

        runner.start()

        def old_claim_yielded():
            row = {r["node"]: r for r in json.loads(a.form("explain", job_id, "--json").stdout)["nodes"]}[
                runner.node_id
            ]
            return row["run"] == "yielded" and row["run_reason"] == "formd restarted during the run"

        wait_until(old_claim_yielded, 30, "the restarted node to mark its old claim yielded")
        assert status(runner, job_id)["state"] == "succeeded"
        assert status(runner, job_id)["node"] == successor
