"""The HTTPS API against real formd processes: client keys and roles (401/403), quotas, cancels
of others' jobs, pinned certificates, the remote `form`, metrics, and hostile requests."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest
from procs import Cluster, wait_until
from prometheus_client.parser import text_string_to_metric_families

from cli.remote import RemoteTarget, load_key
from daemon.control.request_signing import body_digest, sign_request

pytestmark = pytest.mark.slow

NOOP = b'(module (func (export "_start")))'
# A job no node can ever run stays unschedulable: unfinished, without burning a core.
WAITING = ("--label", "never=here")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    with Cluster(root) as cluster:
        a = cluster.add("a", settings={"executors": '["wasm"]'})
        b = cluster.add("b", seed=a, settings={"executors": '["wasm"]'})
        wait_until(lambda: len(a.nodes()) == 2 and len(b.nodes()) == 2, 30, "two nodes to see each other")
        yield cluster


@pytest.fixture(scope="module")
def keys(cluster, tmp_path_factory):
    """One client key per role, granted on node a; node b learns the grants by gossip."""
    a, b = cluster.nodes
    folder = tmp_path_factory.mktemp("keys")
    out = {}
    for role in ("read", "submit", "admin", "other", "unknown"):
        path = folder / f"{role}.key"
        public = a.form("key", "generate", "-o", str(path)).stdout.strip().splitlines()[-1]
        out[role] = (path, public)
    a.form("acl", "grant", out["read"][1], "--role", "read")
    a.form("acl", "grant", out["submit"][1], "--role", "submit", "--max-running", "2")
    a.form("acl", "grant", out["admin"][1], "--role", "admin")
    a.form("acl", "grant", out["other"][1], "--role", "submit")
    wait_until(lambda: len(b.call("acl.list")) == 4, 30, "the grants to reach b")
    return out


def remote(node, keys, role, *args, check=False):
    path, _ = keys[role]
    fingerprint = node.call("status")["tls_fingerprint"]
    return node.form_remote(str(path), fingerprint, *args, check=check)


def target(node, keys, role) -> RemoteTarget:
    return RemoteTarget(node.http_url, load_key(keys[role][0]), node.call("status")["tls_fingerprint"])


def signed(node, keys, role, method, path, body=b""):
    t = target(node, keys, role)
    return t.request(method, path, body)


def context(tmp_path, module: bytes):
    root = tmp_path / f"ctx-{os.urandom(4).hex()}"
    root.mkdir()
    (root / "job.wat").write_bytes(module)
    return root


def submit_waiting(node, keys, role, tmp_path):
    """A job no node can ever run, submitted remotely with the role's key."""
    args = ("submit", str(context(tmp_path, NOOP)), "--kind", "wasm", "--module", "job.wat", *WAITING)
    return remote(node, keys, role, *args, check=True)


def test_every_node_carries_its_certificate_fingerprint_and_api_address_in_its_record(cluster):
    a, b = cluster.nodes
    for observer in (a, b):
        for node in (a, b):
            record = {n["id"]: n for n in observer.nodes()}[node.node_id]
            assert record["capabilities"]["tls_fingerprint"] == node.call("status")["tls_fingerprint"]
            assert record["capabilities"]["http_api"] == f"127.0.0.1:{node.http_port}"


def test_roles_allow_what_they_may_and_refuse_the_rest_with_401_or_403(cluster, keys, tmp_path):
    a, b = cluster.nodes
    # Granted on a, enforced on b as well.
    for node in (a, b):
        assert json.loads(remote(node, keys, "read", "nodes", "--json", check=True).stdout)
        refused = remote(
            node,
            keys,
            "read",
            "submit",
            str(context(tmp_path, NOOP)),
            "--kind",
            "wasm",
            "--module",
            "job.wat",
        )
        assert refused.returncode == 1 and "needs role submit; this client has role read" in refused.stderr
        label = remote(node, keys, "submit", "label", "set", "x=y")
        assert label.returncode == 1 and "label.set needs role admin" in label.stderr
    assert "x" not in a.call("status")["labels"]
    assert remote(a, keys, "admin", "label", "set", "x=y", check=True).returncode == 0
    assert a.call("status")["labels"]["x"] == "y"

    unknown = remote(a, keys, "unknown", "nodes")
    assert unknown.returncode == 1 and "unknown client key" in unknown.stderr
    plain = httpx.get(f"{a.http_url}/v1/nodes", verify=False)
    assert plain.status_code == 401 and "no client key" in plain.json()["error"]
    assert signed(a, keys, "read", "POST", "/v1/jobs", b"{}").status_code == 403
    assert signed(a, keys, "read", "GET", "/v1/acl").status_code == 403
    assert signed(a, keys, "admin", "GET", "/v1/acl").status_code == 200
    # Open files travel on the local socket only: over HTTP, a clear 400 and no file sent.
    as_file = json.dumps({"job": "ab" * 32, "as_file": True}).encode()
    for name, body in (("blob.put-fd", b"{}"), ("job.log", as_file)):
        refused = signed(a, keys, "admin", "POST", f"/v1/call/{name}", body)
        assert refused.status_code == 400 and "local control socket only" in refused.json()["error"]


def test_a_revoked_key_is_refused_everywhere(cluster, keys, tmp_path):
    a, b = cluster.nodes
    path = tmp_path / "temp.key"
    public = a.form("key", "generate", "-o", str(path)).stdout.strip().splitlines()[-1]
    a.form("acl", "grant", public, "--role", "read")
    fingerprint = b.call("status")["tls_fingerprint"]
    wait_until(
        lambda: b.form_remote(str(path), fingerprint, "nodes", check=False).returncode == 0, 30, "grant on b"
    )
    a.form("acl", "revoke", public)
    wait_until(
        lambda: "unknown client key" in b.form_remote(str(path), fingerprint, "nodes", check=False).stderr,
        30,
        "the revoke to reach b",
    )
    assert {g["key"]: g["role"] for g in a.call("acl.list")}[public] == "revoked"


def test_jobs_record_their_client_and_only_it_or_an_admin_may_cancel_them(cluster, keys, tmp_path):
    a, _ = cluster.nodes
    submitted = submit_waiting(a, keys, "submit", tmp_path)
    job = submitted.stdout.strip().splitlines()[-1]
    status = json.loads(remote(a, keys, "read", "status", job, "--json", check=True).stdout)
    assert status["client"] == keys["submit"][1]
    refused = remote(a, keys, "other", "cancel", job)
    assert refused.returncode == 1 and "submitted by another client" in refused.stderr
    assert a.call("job.status", {"job": job})["state"] not in ("cancelled",)
    assert remote(a, keys, "submit", "cancel", job, check=True).returncode == 0
    wait_until(lambda: a.call("job.status", {"job": job})["state"] == "cancelled", 30, "the cancel")
    # An admin may cancel anyone's job.
    other = submit_waiting(a, keys, "other", tmp_path)
    other_job = other.stdout.strip().splitlines()[-1]
    assert remote(a, keys, "admin", "cancel", other_job, check=True).returncode == 0
    wait_until(
        lambda: a.call("job.status", {"job": other_job})["state"] == "cancelled", 30, "the admin's cancel"
    )


def test_a_submit_over_the_clients_max_running_is_refused_with_the_count(cluster, keys, tmp_path):
    a, _ = cluster.nodes
    jobs = []
    for _ in range(2):
        out = submit_waiting(a, keys, "submit", tmp_path)
        jobs.append(out.stdout.strip().splitlines()[-1])
    before = {j["id"] for j in a.call("job.list")}
    refused = remote(
        a,
        keys,
        "submit",
        "submit",
        str(context(tmp_path, NOOP)),
        "--kind",
        "wasm",
        "--module",
        "job.wat",
        *WAITING,
    )
    assert (
        refused.returncode == 1
        and "quota: this client has 2 queued or running job(s) of at most 2" in refused.stderr
    )
    assert {j["id"] for j in a.call("job.list")} == before
    for job in jobs:
        a.call("job.cancel", {"job": job})


def test_remote_submit_logs_and_result_work_as_on_the_socket(cluster, keys, tmp_path):
    a, b = cluster.nodes
    root = context(tmp_path, NOOP)
    out = remote(
        b,
        keys,
        "submit",
        "submit",
        str(root),
        "--kind",
        "wasm",
        "--module",
        "job.wat",
        "--wait",
        "--json",
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["state"] == "succeeded"
    logs = remote(b, keys, "read", "logs", status["id"])
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == a.form("logs", status["id"]).stdout
    result = remote(
        b, keys, "read", "result", status["id"], "-o", str(tmp_path / "out"), "--json", check=True
    )
    assert json.loads(result.stdout) == json.loads(
        a.form("result", status["id"], "-o", str(tmp_path / "out-local"), "--json").stdout
    )


def test_a_wrong_fingerprint_is_refused_before_anything_is_sent(cluster, keys):
    a, _ = cluster.nodes
    result = a.form_remote(str(keys["admin"][0]), "00" * 32, "label", "set", "pinned=no", check=False)
    assert result.returncode == 1 and "not the pinned" in result.stderr
    assert "pinned" not in a.call("status")["labels"]


def test_metrics_are_prometheus_text_with_the_jobs_and_need_a_key_off_the_allow_list(cluster, keys, tmp_path):
    a, _ = cluster.nodes
    text = httpx.get(f"{a.http_url}/metrics", verify=False).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {s.labels["state"]: s.value for s in families["formnet_jobs"].samples}
    listed = a.call("job.list")
    assert sum(jobs.values()) == len(listed) and jobs["cancelled"] == sum(
        1 for j in listed if j["state"] == "cancelled"
    )
    assert {s.labels["status"]: s.value for s in families["formnet_nodes"].samples}["alive"] == 2
    assert "formnet_job_run_seconds" in families and "formnet_updates_refused" in families


def test_hostile_requests_get_clear_errors_and_change_nothing(cluster, keys):
    a, _ = cluster.nodes
    before = (a.call("job.list"), a.call("acl.list"), a.call("status")["labels"])
    t = target(a, keys, "admin")
    url = a.http_url
    # A replayed request: the same signed headers twice.
    body = json.dumps({"labels": {"replayed": "yes"}}).encode()
    headers = sign_request(
        load_key(keys["admin"][0]), "PUT", "/v1/labels", body_digest(body), int(time.time() * 1000)
    )
    first = httpx.put(f"{url}/v1/labels", content=body, headers=headers, verify=False)
    assert first.status_code == 200
    a.call("label.remove", {"keys": ["replayed"]})
    again = httpx.put(f"{url}/v1/labels", content=body, headers=headers, verify=False)
    assert again.status_code == 401 and "replayed" in again.json()["error"]
    # A signature over another body, another path, an old time.
    tampered = httpx.put(
        f"{url}/v1/labels",
        content=b'{"labels":{"evil":"1"}}',
        headers={**headers, "x-form-nonce": "ab" * 16},
        verify=False,
    )
    assert tampered.status_code == 401
    old = sign_request(
        load_key(keys["admin"][0]), "GET", "/v1/nodes", body_digest(b""), int(time.time() * 1000) - 3_600_000
    )
    assert httpx.get(f"{url}/v1/nodes", headers=old, verify=False).status_code == 401
    cases = [
        ("POST", "/v1/jobs", b"[" * 5000 + b"]" * 5000, 400),
        ("POST", "/v1/jobs", b"\xff\xfe not utf-8", 400),
        ("POST", "/v1/jobs", b'{"kind": 5}', 400),
        ("POST", "/v1/jobs", b'{"kind": "run", "timeout_ms": -1}', 400),
        ("POST", "/v1/jobs", b'{"kind": "run", "replicas": 99999999999999999999}', 400),
        ("POST", "/v1/jobs", b"x" * (2 * 1024 * 1024), 413),
        ("GET", "/v1/jobs/../../etc/passwd", b"", 404),
        ("GET", "/v1/blobs/" + "zz" * 32, b"", 404),
        ("GET", "/v1/blobs/" + "ab" * 32, b"", 400),
        ("POST", "/v1/call/job.status", b'{"job": "../../x"}', 400),
        ("POST", "/v1/call/no.such.method", b"{}", 404),
        ("DELETE", "/v1/jobs", b"", 405),
        ("PUT", "/v1/labels", b'{"labels": {"bad key!": "x"}}', 400),
    ]
    for method, path, payload, status in cases:
        response = t.request(method, path, payload)
        assert response.status_code == status, (method, path, response.status_code, response.text[:200])
        assert response.json()["error"]
    for _ in range(200):  # random bytes as bodies
        response = t.request("POST", "/v1/jobs", os.urandom(200))
        assert response.status_code == 400
    assert (a.call("job.list"), a.call("acl.list"), a.call("status")["labels"]) == before
    assert a.running()


def test_a_dashboard_token_reads_on_every_node_and_changes_nothing(cluster):
    a, b = cluster.nodes
    made = json.loads(a.form("token", "create", "--role", "read", "--ttl", "10m", "--json").stdout)
    assert made["url"] == f"https://127.0.0.1:{a.http_port}/#token={made['token']}"
    bearer = {"authorization": f"Bearer {made['token']}"}
    for node in (a, b):
        nodes = httpx.get(f"{node.http_url}/v1/nodes", headers=bearer, verify=False)
        assert nodes.status_code == 200 and len(nodes.json()) == 2
        assert (
            httpx.put(
                f"{node.http_url}/v1/labels", json={"labels": {"t": "1"}}, headers=bearer, verify=False
            ).status_code
            == 403
        )
    refused = a.form("token", "create", "--role", "admin", check=False)
    assert refused.returncode == 1 and "only the read role" in refused.stderr
    for bad in (made["token"][:-4] + "AAAA", "x" * 3000, "not a token"):
        response = httpx.get(
            f"{a.http_url}/v1/nodes", headers={"authorization": f"Bearer {bad}"}, verify=False
        )
        assert response.status_code == 401 and response.json()["error"]
    assert "t" not in a.call("status")["labels"]
