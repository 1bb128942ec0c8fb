"""Three formd nodes on three separate hosts (network namespaces on one bridge, each host with
its own Podman service and image store), deployed with the README's commands:

    host 0:  formd init --listen 0.0.0.0:7946 --new-cluster-key
    host i:  formd init --listen 0.0.0.0:7946 --seed <host 0>:7946 --cluster-key-file cluster.key

(plus `--label host=a|b|c` and `--set` for the tests' fast timings). No --advertise: each node
must work out the address the others dial. Also here: `formd init` on a namespace host with and
without a route, the cluster harness with --netns, delay and loss, and the sweep of a run killed
with SIGKILL. Needs root (CI runs as root)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import FORMD, wait_until
from procs import job_status as status
from wasm_jobs import sleeper_context

from pack_manager.base_image import BASE_IMAGE
from simulations.cluster import main as cluster_main
from simulations.netns.cluster import LISTEN, NetnsCluster
from simulations.netns.network import Network, unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=f"no network namespaces: {unavailable()}"),
]

LABELS = {0: ["host=a"], 1: ["host=b", "spare=yes"], 2: ["host=c", "spare=yes"]}


def test_init_on_a_host_advertises_its_routed_address_and_asks_for_advertise_without_a_route(tmp_path):
    with Network(1) as network:
        host = network.hosts[0]

        def init(name: str, *args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*host.enter, *FORMD, "init", "--state-dir", str(tmp_path / name), *args],
                capture_output=True,
                text=True,
                timeout=60,
            )

        first = init("first", "--listen", LISTEN, "--new-cluster-key")
        assert first.returncode == 0, first.stderr
        assert f"advertising {host.address}:7946" in first.stdout  # the default route's source
        towards_seed = init(
            "second", "--listen", LISTEN, "--seed", f"{network.gateway}:7946", "--new-cluster-key"
        )
        assert f"advertising {host.address}:7946" in towards_seed.stdout
        subprocess.run(["ip", "-n", host.name, "route", "del", "default"], check=True)
        lost = init("third", "--listen", LISTEN, "--new-cluster-key")
        assert lost.returncode == 1 and "pass --advertise HOST:PORT" in lost.stderr, lost.stderr
        assert not (tmp_path / "third").exists()
        unrouted = init("fourth", "--listen", LISTEN, "--seed", "192.168.77.1:7946", "--new-cluster-key")
        assert unrouted.returncode == 1 and "towards the seed 192.168.77.1:7946" in unrouted.stderr
    assert network.exists() == []


ABANDONED_RUN = """
import subprocess, time
from simulations.netns.network import Network
network = Network(1)
network.start()
subprocess.Popen([*network.hosts[0].enter, "sleep", "300"], start_new_session=True)
print(network.hub, network.hosts[0].name, flush=True)
time.sleep(300)
"""


def test_namespaces_of_a_run_killed_with_sigkill_are_swept_by_the_next_run():
    creator = subprocess.Popen([sys.executable, "-c", ABANDONED_RUN], stdout=subprocess.PIPE, text=True)
    names = creator.stdout.readline().split()
    # nsenter may not have entered the namespace yet when the creator prints: wait until it has.
    sleeper = wait_until(
        lambda: subprocess.run(
            ["ip", "netns", "pids", names[1]], capture_output=True, text=True
        ).stdout.split(),
        30,
        "the sleeper to be inside the abandoned host",
    )
    creator.kill()
    creator.wait()
    assert len(names) == 2 and all(Path("/run/netns", n).exists() for n in names) and len(sleeper) == 1
    with Network(1) as network:
        assert network.exists() == [network.hub, network.hosts[0].name]
    assert not any(Path("/run/netns", n).exists() for n in names)
    assert (
        not Path(f"/proc/{sleeper[0]}").exists()
        or "sleep" not in Path(f"/proc/{sleeper[0]}/cmdline").read_text()
    )


def test_the_cluster_harness_runs_on_hosts_of_their_own_with_delay_and_loss_and_removes_them(tmp_path):
    report_dir = tmp_path / "report"
    argv = ["--nodes", "3", "--netns", "--delay", "40ms", "--loss", "1%", "--profile", "fast"]
    argv += [
        "--steady",
        "1s",
        "--changes",
        "1",
        "--report",
        str(report_dir),
        "--root",
        str(tmp_path / "root"),
    ]
    assert cluster_main(argv) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["harness"] == "netns" and report["network"]["delay_ms"] == 40.0
    change = report["convergence"]["changes"][0]
    assert change["saw"] == 3
    assert change["all_s"] >= 0.040  # the other hosts hear of it through a delay relay at least once
    assert report["shutdown"]["namespaces_stuck"] == [] and report["shutdown"]["left_behind"] == 0
    assert not any(Path("/run/netns", name).exists() for name in report["network"]["namespaces"])


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Every host runs Podman on its own store; only host C holds the base image."""
    with NetnsCluster(tmp_path_factory.mktemp("netns"), 3, podman=[0, 1, 2], base_image=[2]) as cluster:
        cluster.init_all(labels=LABELS)
        cluster.start_all()
        yield cluster
        assert cluster.leftover_containers() == {}
    assert cluster.network.exists() == []


def converged(hosts) -> bool:
    ids = {n.node_id for n in hosts.nodes}
    return all({e["id"] for e in n.call("nodes") if e["status"] == "alive"} >= ids for n in hosts.nodes)


def test_three_hosts_with_the_default_init_flags_converge_on_their_own_addresses(hosts):
    wait_until(lambda: converged(hosts), 30, "every host to see the three alive")
    expected = {n.node_id: f"{host.address}:7946" for n, host in zip(hosts.nodes, hosts.hosts)}
    for node in hosts.nodes:
        listed = node.nodes()  # `form nodes --json`
        assert {e["id"]: e["address"] for e in listed} == expected
        assert all(e["status"] == "alive" for e in listed)
        assert f'listen = "{LISTEN}"' in (node.state_dir / "formd.toml").read_text()
    wait_until(
        lambda: (
            {e["id"]: e["executors"] for e in hosts.nodes[0].nodes()}[hosts.nodes[2].node_id]
            == ["podman", "wasm"]
        ),
        30,
        "host C to offer podman",
    )
    assert BASE_IMAGE in hosts.stores[2].images()
    assert BASE_IMAGE not in hosts.stores[0].images() + hosts.stores[1].images()


@pytest.mark.podman
def test_a_job_submitted_on_a_runs_on_c_and_its_result_comes_back_through_b(hosts, tmp_path):
    wait_until(lambda: converged(hosts), 30, "the cluster to be up")
    a, b, c = hosts.nodes
    wait_until(lambda: "podman" in {e["id"]: e for e in a.nodes()}[c.node_id]["executors"], 30, "C's podman")
    context = tmp_path / "context"
    context.mkdir()
    (tmp_path / "note.txt").write_text("from host A\n")
    job_id = a.form(
        "submit",
        str(context),
        "--kind",
        "run",
        "--image",
        BASE_IMAGE,
        "--input",
        str(tmp_path / "note.txt"),
        "--label",
        "host=c",
        "--cmd",
        "sh -c 'cat /data/inputs/note.txt > /data/outputs/copy.txt; echo ran'",
    ).stdout.strip()
    wait_until(lambda: status(b, job_id)["state"] == "succeeded", 60, "B to see the job succeed")
    assert status(b, job_id)["node"] == c.node_id
    out = tmp_path / "out"
    b.form("result", job_id, "-o", str(out))
    assert (out / "copy.txt").read_text() == "from host A\n"
    assert "ran" in b.form("logs", job_id).stdout
    wait_until(lambda: hosts.leftover_containers() == {}, 30, "C to remove the job's container")


@pytest.mark.podman
def test_an_image_only_host_c_holds_runs_on_host_b_and_its_result_comes_back_through_a(hosts, tmp_path):
    wait_until(lambda: converged(hosts), 30, "the cluster to be up")
    a, b, c = hosts.nodes

    def holders() -> list[str]:
        images = json.loads(a.form("images", "--json").stdout)  # `form images --json`
        return next((sorted(h["id"] for h in i["holders"]) for i in images if BASE_IMAGE in i["names"]), [])

    wait_until(lambda: all("podman" in e["executors"] for e in a.nodes()), 30, "podman on every host")
    wait_until(lambda: c.node_id in holders(), 30, "C to publish the image it holds")
    assert BASE_IMAGE not in hosts.stores[1].images()
    context = tmp_path / "context"
    context.mkdir()
    job_id = a.form(
        "submit", str(context), "--kind", "run", "--image", BASE_IMAGE, "--label", "host=b",
        "--cmd", "sh -c 'echo ran on b > /data/outputs/where.txt'",
    ).stdout.strip()  # fmt: skip
    wait_until(lambda: status(a, job_id)["state"] in ("succeeded", "failed"), 90, "the job to end")
    seen = status(a, job_id)
    assert seen["state"] == "succeeded" and seen["node"] == b.node_id, seen
    out = tmp_path / "out"
    a.form("result", job_id, "-o", str(out))
    assert (out / "where.txt").read_text() == "ran on b\n"
    assert BASE_IMAGE in hosts.stores[1].images()  # fetched from C over the sealed transport
    wait_until(lambda: holders() == sorted([b.node_id, c.node_id]), 30, "B to publish it too")
    wait_until(lambda: hosts.leftover_containers() == {}, 30, "B to remove the job's container")


@pytest.mark.wasi
def test_kill9_of_the_runner_on_one_host_fails_over_to_another_host(hosts, tmp_path):
    wait_until(lambda: converged(hosts), 30, "the cluster to be up")
    context = sleeper_context(tmp_path)
    a = hosts.nodes[0]
    # B and C qualify; A, which holds the context, must outlive the runner.
    job_id = a.form(
        "submit",
        str(context),
        "--kind",
        "wasm",
        "--module",
        "sleeper.wasm",
        "--cmd",
        "10",
        "--label",
        "spare=yes",
    ).stdout.strip()
    wait_until(lambda: status(a, job_id)["state"] == "running", 30, "the job to be running")
    runner = next(n for n in hosts.nodes if n.node_id == status(a, job_id)["node"])
    other = next(n for n in hosts.nodes[1:] if n is not runner)
    # Its live log, from the runner: the job is in its 10 s sleep there now (A's view may lag).
    wait_until(lambda: "sleeping 10 s" in runner.form("logs", job_id).stdout, 20, "the job's live log")
    runner.kill()
    wait_until(lambda: status(a, job_id)["state"] == "succeeded", 60, "the other host to finish it")
    for node in (a, other):
        seen = status(node, job_id)
        why = (runner.name, seen, a.form("explain", job_id).stdout)
        assert seen["node"] == other.node_id and seen["attempt"] >= 2, why
    runner.start(new_session=True)  # the module's cluster stays whole for whoever runs next
    wait_until(lambda: converged(hosts), 30, "the restarted host to rejoin")


@pytest.mark.wasi
def test_a_runner_cut_off_from_the_submitter_declines_and_the_next_host_runs_the_job(hosts, tmp_path):
    """No route between A and B (a firewall between two machines); both reach C, so membership
    (indirect probes through C) keeps all three alive. B, ranked first, cannot fetch the job's
    context from A: it declines for good, saying why, and C runs the job."""
    wait_until(lambda: converged(hosts), 30, "the cluster to be up")
    a, b, c = hosts.nodes
    context = sleeper_context(tmp_path)
    (context / "nonce").write_bytes(os.urandom(16))  # a context no host holds yet: B must fetch it
    with hosts.network.cut(0, 1):
        job_id = a.form(
            "submit", str(context), "--kind", "wasm", "--module", "sleeper.wasm", "--cmd", "0",
            "--label", "spare=yes", "--prefer", "host=b",
        ).stdout.strip()  # fmt: skip
        wait_until(lambda: status(a, job_id)["state"] in ("succeeded", "failed"), 90, "the job to end")
        seen = status(a, job_id)
        assert seen["state"] == "succeeded" and seen["node"] == c.node_id, seen
        rows = {r["node"]: r for r in json.loads(a.form("explain", job_id, "--json").stdout)["nodes"]}
        assert rows[b.node_id]["rank"] == 1 and rows[b.node_id]["run"] == "declined", rows
        assert rows[b.node_id]["run_unable"], rows
        assert "could not fetch the job's input" in rows[b.node_id]["run_reason"], rows
    wait_until(lambda: converged(hosts), 30, "the cluster to be whole again")
