"""A Podman job through real formd processes and real Podman: only the node offering Podman
can run it, wherever it is submitted; its outputs and log come back on the submitter."""

import json

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status

from pack_manager.base_image import BASE_IMAGE, ensure_base_image
from pack_manager.podman_service import start_service, stop_service

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@pytest.fixture(scope="module")
def podman_url(tmp_path_factory):
    state = tmp_path_factory.mktemp("podman-state")
    process, url = start_service(state)
    try:
        ensure_base_image(url)
        yield url
    finally:
        stop_service(process, state)


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
        # A job as users write it: a script in the context, run from its working directory,
        # reading an input and a file next to it, with an --env variable.
        context = tmp_path / "context"
        context.mkdir()
        (context / "note.txt").write_text("from the context\n")
        (context / "algo.sh").write_text(
            "set -e\n"
            "pwd > /data/outputs/cwd.txt\n"
            "cat note.txt /data/inputs/sales.csv > scratch.txt\n"  # the working dir is writable
            'echo "$GREETING $(wc -l < scratch.txt)" > /data/outputs/summary.txt\n'
            "echo done\n"
        )
        (tmp_path / "sales.csv").write_text("a,1\nb,2\n")
        job_id = a.form(
            "submit", str(context), "--kind", "run", "--image", BASE_IMAGE, "--input", str(tmp_path / "sales.csv"),
            "--cmd", "sh algo.sh", "--env", "GREETING=hello", "--wait",
        ).stdout.splitlines()[0]  # fmt: skip
        seen = status(a, job_id)
        assert seen["state"] == "succeeded", seen
        assert seen["node"] == b.node_id
        out = tmp_path / "out"
        a.form("result", job_id, "-o", str(out))
        assert (out / "cwd.txt").read_text() == "/data/context\n"
        assert (out / "summary.txt").read_text() == "hello 3\n"
        assert sorted(p.name for p in out.iterdir()) == ["cwd.txt", "summary.txt"]
        assert "done" in a.form("logs", job_id).stdout
        assert a.form("submit", str(context), "--env", "NOEQUALS", check=False).stderr.startswith(
            "form: --env 'NOEQUALS': expected NAME=value"
        )
