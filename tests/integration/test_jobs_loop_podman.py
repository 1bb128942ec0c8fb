"""A Podman job through real formd processes and real Podman: only the node offering Podman
can run it, wherever it is submitted; its outputs and log come back on the submitter."""

import json

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status

from pack_manager.base_image import BASE_IMAGE

pytestmark = [pytest.mark.slow, pytest.mark.podman]


def test_a_podman_run_job_goes_to_the_podman_node_and_its_outputs_come_back(tmp_path, podman_url):
    with Cluster(tmp_path / "nodes") as cluster:
        a = cluster.add("a")
        b = cluster.add(
            "b", seed=a, settings={"executors": '["wasm", "podman"]', "podman_url": json.dumps(podman_url)}
        )
        nodes = (a, b)
        wait_until(lambda: all_see(nodes, [n.node_id for n in nodes]), 30, "the cluster to be up")
        wait_until(
            lambda: "podman" in {n["id"]: n for n in a.nodes()}[b.node_id]["executors"],
            30,
            "b to offer podman",
        )
        context = tmp_path / "context"
        context.mkdir()
        (context / "note.txt").write_text("from the context\n")
        (tmp_path / "in.txt").write_text("an input\n")
        job_id = a.form(
            "submit",
            str(context),
            "--kind",
            "run",
            "--image",
            BASE_IMAGE,
            "--input",
            str(tmp_path / "in.txt"),
            "--cmd",
            "sh -c 'cat /data/inputs/in.txt > /data/outputs/copy.txt; echo copied'",
            "--wait",
        ).stdout.splitlines()[0]
        seen = status(a, job_id)
        assert seen["state"] == "succeeded", seen
        assert seen["node"] == b.node_id
        out = tmp_path / "out"
        a.form("result", job_id, "-o", str(out))
        assert (out / "copy.txt").read_text() == "an input\n"
        assert "copied" in a.form("logs", job_id).stdout
