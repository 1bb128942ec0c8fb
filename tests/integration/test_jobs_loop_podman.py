"""A Podman job through real formd processes and real Podman: only the node offering Podman
can run it, wherever it is submitted; its outputs and log come back on the submitter."""

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status
from python_image import make_python_image

from pack_manager.base_image import BASE_IMAGE

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@contextmanager
def podman_cluster(tmp_path):
    """A Cluster whose nodes' containers are removed when it ends: a test that fails, or ends
    while a job still runs, kills formd -9 and would leave them (the next formd sweeps them, but
    these nodes do not start again)."""
    cluster = Cluster(tmp_path / "nodes")
    try:
        with cluster:
            yield cluster
    finally:
        for node in cluster.nodes:
            if node.node_id:
                ids = subprocess.run(
                    ["podman", "ps", "-aq", "--filter", f"label=formnet.node={node.node_id}"],
                    capture_output=True, text=True,
                ).stdout.split()  # fmt: skip
                if ids:
                    subprocess.run(["podman", "rm", "-f", *ids], capture_output=True)


def run_and_wait(node, context, image, input_file, command, env) -> str:
    """`form submit --kind run ... --wait` as a user types it; the job id."""
    return node.form(
        "submit", str(context), "--kind", "run", "--image", image, "--input", str(input_file),
        "--cmd", command, "--env", env, "--wait",
    ).stdout.splitlines()[0]  # fmt: skip


@pytest.fixture(scope="module")
def python_image():
    """An image with python3 (tests/python_image.py), removed after the module's tests."""
    name = make_python_image(f"localhost/formnet/test-python-{os.urandom(3).hex()}:latest")
    try:
        yield name
    finally:
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True)


def test_a_podman_run_job_goes_to_the_podman_node_and_its_outputs_come_back(
    tmp_path, podman_url, python_image
):
    with podman_cluster(tmp_path) as cluster:
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
        job_id = run_and_wait(a, context, BASE_IMAGE, tmp_path / "sales.csv", "sh algo.sh", "GREETING=hello")
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
            "form: --env: 'NOEQUALS' is not K=V"
        )

        # The same with a python3 script next to a module of its own, as a data scientist writes it.
        algo = tmp_path / "algo"
        algo.mkdir()
        (algo / "helpers.py").write_text("def total(rows):\n    return sum(int(r[1]) for r in rows)\n")
        (algo / "algo.py").write_text(
            "import csv, os\n"
            "from helpers import total\n"
            "rows = list(csv.reader(open('/data/inputs/sales.csv')))\n"
            "open('/data/outputs/total.txt', 'w').write(f\"{os.environ['UNIT']} {total(rows)}\\n\")\n"
        )
        job_id = run_and_wait(a, algo, python_image, tmp_path / "sales.csv", "python3 algo.py", "UNIT=EUR")
        assert status(a, job_id)["state"] == "succeeded", a.form("logs", job_id).stdout
        a.form("result", job_id, "-o", str(tmp_path / "py-out"))
        assert (tmp_path / "py-out" / "total.txt").read_text() == "EUR 3\n"


def containers_of(job_id: str) -> list[dict]:
    """This job's containers, whoever made them (the label is the job's own id)."""
    out = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label=formnet.job={job_id}", "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out or "[]")


@contextmanager
def two_podman_nodes(tmp_path, podman_url):
    """A submitter without Podman and two Podman nodes."""
    settings = {"executors": '["wasm", "podman"]', "podman_url": json.dumps(podman_url)}
    with podman_cluster(tmp_path) as cluster:
        submitter = cluster.add("submitter")  # holds the context while a runner is stopped
        cluster.add("a", seed=submitter, settings=settings)
        cluster.add("b", seed=submitter, settings=settings)
        wait_until(lambda: all_see(cluster.nodes, [n.node_id for n in cluster.nodes]), 30, "the cluster up")
        wait_until(
            lambda: sum("podman" in n["executors"] for n in submitter.nodes()) == 2,
            30,
            "a, b to offer podman",
        )
        yield cluster


def submit_sleeper(node, tmp_path, seconds: int) -> str:
    context = tmp_path / "sleeper"
    context.mkdir(exist_ok=True)
    return node.form(
        "submit", str(context), "--kind", "run", "--image", BASE_IMAGE, "--cmd", f"sleep {seconds}",
    ).stdout.split()[-1]  # fmt: skip


def running_container(cluster, job_id: str):
    """(the node whose container runs the job, the container's id), once it runs."""
    found = wait_until(
        lambda: [c for c in containers_of(job_id) if c["State"] == "running"],
        30,
        "the job's container to run",
    )
    node_hex = found[0]["Labels"]["formnet.node"]
    return next(n for n in cluster.nodes if n.node_id == node_hex), found[0]["Id"]


def final_runs(node, job_id: str) -> dict[str, str]:
    rows = node.call("job.explain", {"job": job_id})["nodes"]
    return {row["node"]: row["run"] for row in rows if row["run"]}


def test_a_container_left_by_a_killed_formd_is_removed_when_it_restarts_and_the_job_finishes_once(
    tmp_path, podman_url
):
    with two_podman_nodes(tmp_path, podman_url) as cluster:
        submitter = cluster.nodes[0]
        job_id = submit_sleeper(submitter, tmp_path, 8)
        runner, container_id = running_container(cluster, job_id)
        runner.kill()
        assert container_id in {c["Id"] for c in containers_of(job_id)}  # kill -9 leaves it
        runner.start()
        restarted = time.monotonic()
        wait_until(
            lambda: container_id not in {c["Id"] for c in containers_of(job_id)},
            30,  # a generous deadline for a loaded host: formd's start and a Podman probe come first
            "the restarted formd to remove the container its earlier process left",
        )
        print(f"\nleftover container removed {time.monotonic() - restarted:.1f} s after formd answered again")
        removal = f'podman leftover removed what="container formnet-{job_id[:12]}'
        wait_until(lambda: removal in runner.log_text(), 10, "the removal's log line")  # after the sweep
        wait_until(lambda: status(submitter, job_id)["state"] == "succeeded", 60, "the job to finish")
        runs = final_runs(submitter, job_id)
        # The killed run's claim may not have been written yet (a claim waits CLAIM_QUIET_S).
        assert runs.get(runner.node_id) in (None, "yielded", "succeeded"), runs
        assert list(runs.values()).count("succeeded") == 1, runs
        wait_until(lambda: containers_of(job_id) == [], 30, "no container of the job anywhere")
        assert not list((runner.state_dir / "work").iterdir())


def test_sigterm_stops_the_running_job_removes_its_container_and_the_job_moves_on(tmp_path, podman_url):
    with two_podman_nodes(tmp_path, podman_url) as cluster:
        submitter = cluster.nodes[0]
        job_id = submit_sleeper(submitter, tmp_path, 8)
        runner, _ = running_container(cluster, job_id)
        assert runner.stop() == 0
        assert [c for c in containers_of(job_id) if c["Labels"]["formnet.node"] == runner.node_id] == []
        other = next(n for n in cluster.nodes[1:] if n is not runner)
        wait_until(
            lambda: status(submitter, job_id)["state"] == "succeeded", 60, "the job to finish elsewhere"
        )
        assert final_runs(submitter, job_id) == {runner.node_id: "yielded", other.node_id: "succeeded"}
        assert status(submitter, job_id)["node"] == other.node_id


FAKE_PYNVML = Path(__file__).parent.parent / "fake_pynvml"
CDI_DIR = Path("/etc/cdi")  # where Podman 4.3 reads CDI specs


def fake_gpus(*uuids: str) -> dict[str, str]:
    """formd's environment for a host with these (fake) NVIDIA GPUs."""
    gpus = [{"name": "Fake GPU", "uuid": uuid, "memory": 16 * 1024**3} for uuid in uuids]
    return {"PYTHONPATH": str(FAKE_PYNVML), "FORMNET_FAKE_GPUS": json.dumps(gpus)}


@contextmanager
def cdi_spec(*uuids: str):
    """A CDI spec for nvidia.com/gpu whose devices inject a harmless device node
    (/dev/null as /dev/formnet-test-<uuid>) and a variable naming the device."""
    CDI_DIR.mkdir(parents=True, exist_ok=True)
    path = CDI_DIR / f"formnet-test-{uuids[0]}.json"
    devices = [
        {
            "name": uuid,
            "containerEdits": {
                "env": [f"FORMNET_TEST_GPU={uuid}"],
                "deviceNodes": [{"path": f"/dev/formnet-test-{uuid}", "hostPath": "/dev/null"}],
            },
        }
        for uuid in uuids
    ]
    path.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": devices}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_gpu_jobs_get_their_cdi_device_one_at_a_time_and_a_node_without_a_spec_offers_none(
    tmp_path, podman_url
):
    token = os.urandom(4).hex()
    mine, other, unspecified = f"GPU-{token}-0", f"GPU-{token}-1", f"GPU-{token}-2"
    settings = {"executors": '["wasm", "podman"]', "podman_url": json.dumps(podman_url)}
    with cdi_spec(mine, other), podman_cluster(tmp_path) as cluster:
        gpu = cluster.add("gpu", settings=settings, env=fake_gpus(mine))
        bare = cluster.add("bare", seed=gpu, settings=settings, env=fake_gpus(unspecified))
        wait_until(lambda: all_see(cluster.nodes, [gpu.node_id, bare.node_id]), 30, "the cluster up")
        wait_until(lambda: all("podman" in n["executors"] for n in gpu.nodes()), 30, "podman offered")

        # The node without a spec reports its GPU, offers it to no job, and says so once.
        rows = {n["id"]: n for n in gpu.nodes()}
        assert [g["uuid"] for g in rows[bare.node_id]["capabilities"]["gpus"]] == [unspecified]
        assert rows[bare.node_id]["capabilities"]["gpus"][0]["cdi_device"] == ""
        assert rows[gpu.node_id]["capabilities"]["gpus"][0]["cdi_device"] == f"nvidia.com/gpu={mine}"
        assert bare.log_text().count("GPUs not offered to jobs") == 1
        assert "GPUs not offered" not in gpu.log_text()
        assert "1 not offered: no CDI spec" in bare.form("nodes").stdout

        context = tmp_path / "gpu-job"
        context.mkdir()
        (context / "probe.sh").write_text(
            "ls /dev | grep formnet-test- > /data/outputs/devices.txt\n"
            'echo "$FORMNET_TEST_GPU $NVIDIA_VISIBLE_DEVICES $CUDA_VISIBLE_DEVICES" > /data/outputs/env.txt\n'
            "sleep 2\n"
        )
        jobs = [
            bare.form(
                "submit",
                str(context),
                "--kind",
                "run",
                "--image",
                BASE_IMAGE,
                "--gpu",
                "1",
                "--cmd",
                "sh probe.sh",
            ).stdout.split()[-1]  # fmt: skip
            for _ in range(2)
        ]
        for job_id in jobs:
            wait_until(lambda: status(bare, job_id)["state"] == "succeeded", 60, "the GPU jobs to succeed")
        seen = [status(bare, job_id) for job_id in jobs]
        assert {s["node"] for s in seen} == {gpu.node_id}
        first, second = sorted(seen, key=lambda s: s["started_at"])
        assert second["started_at"] >= first["finished_at"], seen  # one GPU: one job at a time
        for job_id in jobs:
            out = tmp_path / f"out-{job_id[:8]}"
            bare.form("result", job_id, "-o", str(out))
            assert (out / "devices.txt").read_text() == f"formnet-test-{mine}\n"  # exactly its device
            assert (out / "env.txt").read_text() == f"{mine} {mine} {mine}\n"
        explained = gpu.call("job.explain", {"job": jobs[0]})["nodes"]
        bare_row = next(r for r in explained if r["node"] == bare.node_id)
        assert not bare_row["fits"] and "not offered to jobs" in " ".join(bare_row["reasons"])
