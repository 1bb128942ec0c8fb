"""`form --remote` with a Podman job through real formd processes and real Podman: a streamed
upload of its context and a multi-MiB input, `logs -f` following it while it runs, and
`result -o` streaming its outputs back."""

import json
import os
import subprocess

import pytest
from procs import FORM, Cluster, all_see, wait_until

from pack_manager.base_image import BASE_IMAGE

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@pytest.fixture(scope="module")
def podman_cluster(tmp_path_factory, podman_url):
    """a (wasm only), b (podman); a submit-role client key granted on a."""
    root = tmp_path_factory.mktemp("http-podman")
    with Cluster(root / "nodes") as cluster:
        a = cluster.add("a")
        b = cluster.add(
            "b", seed=a, settings={"executors": '["wasm", "podman"]', "podman_url": json.dumps(podman_url)}
        )
        wait_until(lambda: all_see((a, b), [a.node_id, b.node_id]), 30, "the cluster to be up")
        wait_until(
            lambda: "podman" in {n["id"]: n for n in a.nodes()}[b.node_id]["executors"],
            30,
            "b to offer podman",
        )
        key = root / "client.key"
        a.grant_new_client_key(key, "submit")
        yield cluster, key


def remote_args(node, key):
    return [
        *FORM,
        "--remote",
        node.http_url,
        "--key",
        str(key),
        "--fingerprint",
        node.call("status")["tls_fingerprint"],
    ]


def a_context(tmp_path):
    context = tmp_path / f"context-{os.urandom(4).hex()}"
    context.mkdir()
    (context / "note.txt").write_text("from the context\n")
    return context


def test_remote_submit_and_result_of_a_podman_job_stream_a_large_input_there_and_back(
    podman_cluster, tmp_path
):
    cluster, key = podman_cluster
    a, b = cluster.nodes
    payload = os.urandom(6 * 1024 * 1024 + 123)
    (tmp_path / "big.bin").write_bytes(payload)
    submitted = a.form_remote(
        str(key),
        a.call("status")["tls_fingerprint"],
        "submit",
        str(a_context(tmp_path)),
        "--kind",
        "run",
        "--image",
        BASE_IMAGE,
        "--input",
        str(tmp_path / "big.bin"),
        "--cmd",
        "sh -c 'cp /data/inputs/big.bin /data/outputs/copy.bin; echo copied'",
        "--wait",
        "--json",
    )
    status = json.loads(submitted.stdout)
    assert status["state"] == "succeeded", status
    assert status["node"] == b.node_id
    assert "█" not in submitted.stderr and "upload" not in submitted.stderr  # no bar when piped
    out = tmp_path / "out"
    fetched = a.form_remote(
        str(key), a.call("status")["tls_fingerprint"], "result", status["id"], "-o", str(out), "--json"
    )
    assert (out / "copy.bin").read_bytes() == payload
    assert json.loads(fetched.stdout) == a.call("job.files", {"job": status["id"], "which": "outputs"})


def test_remote_logs_follow_a_running_podman_job_until_it_finishes(podman_cluster, tmp_path):
    cluster, key = podman_cluster
    a, _ = cluster.nodes
    job = a.form_remote(
        str(key),
        a.call("status")["tls_fingerprint"],
        "submit",
        str(a_context(tmp_path)),
        "--kind",
        "run",
        "--image",
        BASE_IMAGE,
        "--cmd",
        "sh -c 'echo first; sleep 4; echo last'",
    ).stdout.strip()
    wait_until(lambda: a.call("job.status", {"job": job})["state"] == "running", 60, "the job to run")
    follower = subprocess.Popen(
        [*remote_args(a, key), "logs", "-f", job], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert follower.stdout.readline() == "first\n"
        assert a.call("job.status", {"job": job})["state"] == "running"  # followed, not read afterwards
        rest, errors = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, errors
    assert rest == "last\n"
    assert a.call("job.status", {"job": job})["state"] == "succeeded"


def test_a_remote_download_of_an_unknown_blob_fails_cleanly(podman_cluster, tmp_path):
    cluster, key = podman_cluster
    a, _ = cluster.nodes
    from cli.remote import RemoteError, RemoteTarget, load_key  # noqa: PLC0415
    from cli.remote_blobs import download  # noqa: PLC0415

    target = RemoteTarget(a.http_url, load_key(key), a.call("status")["tls_fingerprint"])
    with pytest.raises(RemoteError):
        download(target, "ab" * 32, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    assert a.running()
