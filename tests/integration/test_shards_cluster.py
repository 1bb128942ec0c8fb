"""Sharded jobs across 3 real formd processes: 3 shards on 3 nodes with split inputs, one
shard's runner killed -9 mid-run and that shard finished elsewhere; results per shard."""

import json

import pytest
from procs import Cluster, all_see, wait_until

pytestmark = pytest.mark.slow


def test_a_three_shard_job_survives_a_runner_killed_mid_run(tmp_path, wasm_context):
    with Cluster(tmp_path / "cluster") as cluster:
        seed = cluster.add("a")
        cluster.add("b", seed=seed)
        cluster.add("c", seed=seed)
        a = cluster.nodes[0]
        ids = [n.node_id for n in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 30, "all three nodes to see each other")
        files = []
        for i in range(5):
            files += ["--input", str(tmp_path / f"in{i}.txt")]
            (tmp_path / f"in{i}.txt").write_text(f"part {i}\n")
        submitted = json.loads(
            a.form(
                "submit",
                str(wasm_context / "context"),
                "--kind",
                "wasm",
                "--module",
                "shard.wasm",
                "--cmd",
                "8",
                *files,
                "--shards",
                "3",
                "--split-inputs",
                "--json",
            ).stdout
        )
        group = submitted["id"]
        assert len(submitted["shards"]) == 3

        def shards():
            return a.call("job.status", {"job": group})["shards"]

        def running_elsewhere():
            return next((s for s in shards() if s["state"] == "running" and s["node"] != a.node_id), None)

        victim_shard = wait_until(running_elsewhere, 60, "a shard to run on another node")
        nodes_at_start = wait_until(
            lambda: len({s["node"] for s in shards() if s["node"]}) == 3 and [s["node"] for s in shards()],
            60,
            "every shard to have its node",
        )
        assert len(set(nodes_at_start)) == 3  # three shards, three distinct nodes
        victim = next(n for n in cluster.nodes if n.node_id == victim_shard["node"])
        victim.kill()

        done = wait_until(
            lambda: (s := a.call("job.status", {"job": group}))["state"] == "succeeded" and s,
            120,
            "every shard to succeed",
        )
        moved = done["shards"][victim_shard["index"]]
        assert moved["node"] != victim.node_id and moved["attempt"] == 2
        assert [s["state"] for s in done["shards"]] == ["succeeded"] * 3

        out = tmp_path / "result"
        a.form("result", group, "-o", str(out))
        for index, names in enumerate([["in0.txt", "in3.txt"], ["in1.txt", "in4.txt"], ["in2.txt"]]):
            shard_dir = out / f"shard-{index}"
            assert (shard_dir / "shard.txt").read_text() == f"{index}/3\n"
            assert sorted(p.name for p in shard_dir.glob("*.upper")) == [f"{n}.upper" for n in names]
            for name in names:
                assert (shard_dir / f"{name}.upper").read_text() == (tmp_path / name).read_text().upper()
        assert a.form("logs", group, "--shard", "2").stdout == "shard 2 of 3\n"
        refused = a.form("logs", group, check=False)
        assert refused.returncode == 1 and "give --shard 0..2" in refused.stderr
        assert json.loads(a.form("status", group, "--json").stdout)["state"] == "succeeded"
        refused = a.form("explain", group, check=False)
        assert refused.returncode == 1 and "is sharded: explain one of its shards" in refused.stderr
        shard = json.loads(a.form("explain", submitted["shards"][0], "--json").stdout)
        assert shard["nodes"][0]["node"] == nodes_at_start[0]  # shard 0 starts at the group's first node
