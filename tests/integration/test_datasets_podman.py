"""Compute-to-data with real Podman and real formd processes: A and B both run Podman, only A
holds the dataset; jobs submitted on C run on A with the dataset mounted read-only, images are
checked against the owner's policy (by name and by id), the output cap holds, and after every
kind of end (success, failure, timeout, cancel, formd killed and restarted) no container and
no work area is left."""

import json
import subprocess

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status

from pack_manager.base_image import BASE_IMAGE
from pack_manager.context_archive import pack_context

pytestmark = [pytest.mark.slow, pytest.mark.podman]

MARKER = b"podman-dataset-4b1d-secret"
ROWS = b"".join(b"%d,%s\n" % (i, MARKER) for i in range(300))
FINAL = ("succeeded", "failed", "cancelled", "timed_out")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, podman_url):
    podman = {"executors": '["wasm", "podman"]', "podman_url": json.dumps(podman_url)}
    with Cluster(tmp_path_factory.mktemp("nodes")) as cluster:
        a = cluster.add("a", settings=podman)
        b = cluster.add("b", seed=a, settings=podman)
        c = cluster.add("c", seed=a)
        wait_until(lambda: all_see(cluster.nodes, [n.node_id for n in cluster.nodes]), 30, "the cluster")
        for runner in (a, b):
            wait_until(
                lambda runner=runner: (
                    "podman" in {n["id"]: n for n in c.nodes()}[runner.node_id]["executors"]
                ),
                30,
                f"{runner.name} to offer podman",
            )
        data = cluster.root / "ward" / "records"
        data.mkdir(parents=True)
        (data / "rows.csv").write_bytes(ROWS)
        a.form("dataset", "add", "ward", str(data))
        wait_until(lambda: "ward" in c.form("datasets").stdout, 30, "c to list the dataset")
        try:
            yield cluster
        finally:  # a failed test may leave a run behind when the nodes are killed
            cluster.close()
            for node in cluster.nodes:
                for container in containers_of(node):
                    subprocess.run(["podman", "rm", "-f", container["Id"]], capture_output=True)


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    root = tmp_path_factory.mktemp("algorithm") / "context"
    root.mkdir()
    (root / "count.sh").write_text("wc -l < /data/datasets/$1/rows.csv\n")
    return root


def submit(node, context, *args: str) -> str:
    result = node.form("submit", str(context), "--kind", "run", "--image", BASE_IMAGE, *args)
    return result.stdout.strip().splitlines()[-1]


def final(node, job_id: str, timeout: float = 90) -> dict:
    return wait_until(
        lambda: (s := status(node, job_id))["state"] in FINAL and s, timeout, f"job {job_id[:12]} to end"
    )


def containers_of(node) -> list:
    listed = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label=formnet.node={node.node_id}", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(listed or "[]")


def nothing_left(node) -> bool:
    work = node.state_dir / "work"
    return containers_of(node) == [] and (not work.exists() or list(work.iterdir()) == [])


def add_and_wait(cluster, name: str, *policy: str) -> None:
    a, _, c = cluster.nodes
    a.form("dataset", "add", name, str(cluster.root / "ward" / "records"), *policy)
    wait_until(
        lambda: (
            any(
                d["name"] == name and d["holders"][0]["added_at"]
                for d in json.loads(c.form("datasets", "--json").stdout)
            )
            and json.loads(c.form("datasets", "--json").stdout)
        ),
        30,
        f"c to list {name}",
    )


def test_a_podman_job_reads_the_dataset_on_its_holder_only(cluster, context, tmp_path):
    a, b, c = cluster.nodes
    for _ in range(6):  # some of these rank B first: the dataset keeps every one on A
        job_id = submit(
            c,
            context,
            "--dataset",
            "ward",
            "--cmd",
            "sh -c 'sh /data/context/count.sh ward > /data/outputs/count.txt 2>/dev/null"
            " || wc -l < /data/datasets/ward/rows.csv > /data/outputs/count.txt;"
            " touch /data/datasets/ward/x 2>/dev/null && echo writable || echo read-only'",
        )
        seen = final(c, job_id)
        assert seen["state"] == "succeeded", seen
        assert seen["node"] == a.node_id
    out = tmp_path / "out"
    c.form("result", job_id, "-o", str(out))
    assert (out / "count.txt").read_text().strip() == "300"
    assert "read-only" in c.form("logs", job_id).stdout
    for node in (b, c):
        for path in node.state_dir.rglob("*"):
            if path.is_file():
                assert MARKER not in path.read_bytes(), path
    assert nothing_left(a)


def test_images_are_checked_against_the_policy_by_name_and_by_id(cluster, context, tmp_path):
    a, b, c = cluster.nodes
    add_and_wait(cluster, "ward-other-image", "--allow-image", "localhost/formnet/other:1")
    refused = final(c, submit(c, context, "--dataset", "ward-other-image", "--cmd", "true"))
    assert refused["state"] == "failed"
    assert "refused by dataset policy" in refused["reason"] and "image" in refused["reason"]
    assert refused["log"] is None  # nothing ran
    image_id = subprocess.run(
        ["podman", "image", "inspect", BASE_IMAGE, "--format", "{{.Id}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    add_and_wait(cluster, "ward-by-id", "--allow-image", image_id[:16])
    allowed = final(c, submit(c, context, "--dataset", "ward-by-id", "--cmd", "true"))
    assert allowed["state"] == "succeeded", allowed
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("not this algorithm")
    add_and_wait(cluster, "ward-algorithm", "--allow-algorithm", pack_context(other, tmp_path / "o.tar")[0])
    refused = final(c, submit(c, context, "--dataset", "ward-algorithm", "--cmd", "true"))
    assert refused["state"] == "failed" and "algorithm" in refused["reason"], refused
    assert nothing_left(a)


def test_the_output_cap_holds(cluster, context):
    a, b, c = cluster.nodes
    add_and_wait(cluster, "ward-capped", "--max-output", "12KiB")
    over = final(
        c,
        submit(
            c,
            context,
            "--dataset",
            "ward-capped",
            "--cmd",
            "cp /data/datasets/ward-capped/rows.csv /data/outputs/",
        ),
    )
    assert over["state"] == "failed" and "output cap" in over["reason"], over
    assert over["outputs"] == []
    assert nothing_left(a)


def test_nothing_is_left_after_any_end(cluster, context):
    a, b, c = cluster.nodes
    failed = final(c, submit(c, context, "--dataset", "ward", "--cmd", "sh -c 'exit 3'"))
    assert failed["state"] == "failed" and "code 3" in failed["reason"]
    assert nothing_left(a)
    timed = final(c, submit(c, context, "--dataset", "ward", "--cmd", "sleep 60", "--timeout", "2s"))
    assert timed["state"] == "timed_out"
    assert nothing_left(a)
    sleeping = submit(c, context, "--dataset", "ward", "--cmd", "sleep 600")
    wait_until(lambda: status(c, sleeping)["state"] == "running", 60, "the job to run")
    c.form("cancel", sleeping)
    assert final(c, sleeping)["state"] == "cancelled"
    assert nothing_left(a)
    # formd killed mid-run: its container outlives it until the restarted formd removes it.
    crashing = submit(c, context, "--dataset", "ward", "--cmd", "sleep 600")
    wait_until(lambda: containers_of(a), 60, "the container to start on a")
    a.kill()
    left = {container["Id"] for container in containers_of(a)}
    assert left
    a.start()
    wait_until(lambda: not left & {x["Id"] for x in containers_of(a)}, 60, "the leftover container to go")
    c.form("cancel", crashing)
    assert final(c, crashing)["state"] == "cancelled"
    wait_until(lambda: nothing_left(a), 60, "a to hold nothing of the job")
    assert "podman leftover removed" in a.log_text()
