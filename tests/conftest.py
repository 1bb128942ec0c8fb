"""Fixtures that tests in both folders share (tests/unit runs inside the pytest process,
tests/integration starts real formd processes and Podman). Helpers that are not fixtures sit
next to this file; tests/README.md says what is where."""

import subprocess

import pytest
import trio
import trio.testing
from procs import Cluster, all_see, wait_until
from wasm_jobs import TEXT, WASM_DIR

from pack_manager.base_image import ensure_base_image
from pack_manager.podman_service import start_service, stop_service
from simulations.sim.determinism import deterministic_trio


@pytest.fixture
def autojump_clock():
    """Simulated time, and trio's scheduler made deterministic as in the simulation
    (simulations/sim/determinism.py): a test's run is the same every time, so a failure
    reproduces instead of showing up in one run of several. Worker-thread calls run inline,
    in zero simulated time."""
    with deterministic_trio(seed=0):
        yield trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(scope="session")
def podman_url(tmp_path_factory):
    """A Podman API service of our own, with the local busybox base image, for the whole run."""
    state = tmp_path_factory.mktemp("podman-state")
    process, url = start_service(state)
    try:
        ensure_base_image(url)
        yield url
    finally:
        stop_service(process, state)


@pytest.fixture(scope="module")
def formd_cluster(tmp_path_factory):
    """Three formd processes on 127.0.0.1, a (label zone=a), b and c, joined through a and all
    seeing all alive; one cluster per test module, killed when the module ends."""
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        seed = cluster.add("a", labels=["zone=a"])
        cluster.add("b", seed=seed)
        cluster.add("c", seed=seed)
        ids = [n.node_id for n in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 30, "all three nodes to see each other")
        yield cluster


@pytest.fixture(scope="module")
def wasm_context(tmp_path_factory):
    """A job directory: context/ holds upcase.wasm and shard.wasm (built from tests/wasm), in.txt
    holds TEXT."""
    root = tmp_path_factory.mktemp("wasm-job")
    context = root / "context"
    context.mkdir()
    subprocess.run(["bash", str(WASM_DIR / "build.sh"), str(context)], check=True)
    (root / "in.txt").write_bytes(TEXT)
    return root
