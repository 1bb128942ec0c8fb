"""N real formd processes, each in its own process group and state dir: on 127.0.0.1, or each in
its own network namespace (simulations/netns).

Built on tests/procs.py (the same `formd init` / `formd run` the integration tests use). Every
process ever started is remembered by pid, so `stop()` and the caller's checks can account
for all of them; `stop()` is safe to call from a finally block at any point of a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import psutil

from cli.client import Connection

from ..netns.cluster import host_formd
from ..netns.network import Host
from .measure import Observer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from procs import DEFAULT_TIMINGS, TEST_SETTINGS, Formd, compile_wasi, free_port, wait_until  # noqa: E402,F401  (re-exported)

STOP_GRACE_S = 20.0

# default: formd's shipped timings; fast: the integration tests' (suspect after 1 s of silence,
# dead after 3 s). WASM jobs only either way: no Podman service per node.
PROFILES = {
    "default": {**DEFAULT_TIMINGS, "executors": '["wasm"]'},
    "fast": {**TEST_SETTINGS, "gossip_fanout": "3"},
}


class ControlView:
    """A persistent control connection whose fetch() is this node's `nodes` view."""

    def __init__(self, socket_path: Path) -> None:
        self.connection = Connection(socket_path, timeout=10)

    def fetch(self) -> list[dict]:
        return self.connection.call("nodes")

    def close(self) -> None:
        self.connection.close()


class FormdCluster:
    def __init__(
        self,
        root: Path,
        size: int,
        settings: dict[str, str],
        say: Callable[[str], None] = print,
        hosts: list[Host] | None = None,
    ) -> None:
        """hosts: one network namespace per node (simulations/netns), else all on 127.0.0.1."""
        self.root = root
        self.settings = settings
        self.say = say
        if hosts is None:
            self.nodes = [Formd(root / f"n{index}", f"n{index}") for index in range(size)]
        else:
            self.nodes = [host_formd(root / f"n{index}", f"n{index}", hosts[index]) for index in range(size)]
        self.pids: list[dict[str, Any]] = []  # every process this cluster started: {"name", "pid", "kind"}
        self.stopped = StopTally()

    # ---- start ---------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> float:
        """Init every node (n0 makes the cluster key and is everyone's seed), start them all,
        wait until every node's view lists all N alive; returns seconds from the first start."""
        seed = self.nodes[0]
        seed.init(settings=self.settings)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(
                pool.map(
                    lambda n: n.init(seeds=[seed.address], key_file=seed.key_file, settings=self.settings),
                    self.nodes[1:],
                )
            )
        began = time.monotonic()
        self._start_node(seed)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(self._start_node, self.nodes[1:]))
        self.wait_converged(timeout)
        converged = time.monotonic() - began
        for node in self.nodes:  # once through the real CLI, as a user would check
            listed = json.loads(node.form("nodes", "--json").stdout)
            assert len(listed) == len(self.nodes) and all(n["status"] == "alive" for n in listed), (
                f"{node.name}: {listed}"
            )
        return converged

    def _start_node(self, node: Formd) -> None:
        try:
            node.start(new_session=True)
        finally:
            if node.process is not None:
                self.pids.append(process_entry(node.name, node.process, "formd"))
        self.say(f"started formd {node.name} pid={node.process.pid} at {node.address}")

    def wait_converged(self, timeout: float) -> None:
        ids = {n.node_id for n in self.nodes if n.running()}

        def everyone_sees_everyone() -> bool:
            for node in self.running():
                alive = {entry["id"] for entry in node.call("nodes") if entry["status"] == "alive"}
                if not ids <= alive:
                    return False
            return True

        wait_until(
            everyone_sees_everyone, timeout, f"{len(ids)} formd nodes to see each other alive", interval=0.2
        )

    # ---- views and changes --------------------------------------------------------------------

    def running(self) -> list[Formd]:
        return [n for n in self.nodes if n.running()]

    def observers(self) -> list[Observer]:
        return [Observer(n.name, lambda n=n: ControlView(n.socket), n.running) for n in self.running()]

    def set_label(self, index: int, key: str, value: str) -> None:
        self.nodes[index].call("label.set", {"labels": {key: value}})

    def counters(self) -> dict[str, dict[str, int]]:
        return {n.name: n.call("status") for n in self.running()}

    # ---- faults ---------------------------------------------------------------------------

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        if not node.running():
            raise RuntimeError(f"{node.name} is not running")
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(10)

    def term(self, index: int) -> None:
        node = self.nodes[index]
        if not node.running():
            raise RuntimeError(f"{node.name} is not running")
        node.signal(signal.SIGTERM)

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        if node.running():
            node.wait(STOP_GRACE_S)  # a SIGTERMed node may still be leaving
        self._start_node(node)

    # ---- stop ---------------------------------------------------------------------------

    def stop(self) -> dict[str, int]:
        """SIGTERM every running node, wait for them together, SIGKILL the process group of any
        straggler. Returns how many left gracefully and how many had to be killed."""
        return self.stopped.add(
            stop_processes([n.process for n in self.nodes if n.process is not None], STOP_GRACE_S)
        )


def process_entry(name: str, process: subprocess.Popen, kind: str) -> dict[str, Any]:
    """A started process, identified by pid and start time (a later process reusing the pid differs)."""
    try:
        created = psutil.Process(process.pid).create_time()
    except psutil.Error:
        created = None
    return {"name": name, "pid": process.pid, "kind": kind, "create_time": created}


def leftovers(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries whose process still exists (not a zombie): what a clean stop leaves empty."""
    left = []
    for entry in entries:
        try:
            process = psutil.Process(entry["pid"])
            if process.status() != psutil.STATUS_ZOMBIE and process.create_time() == entry["create_time"]:
                left.append(entry)
        except psutil.Error:
            pass
    return left


class StopTally(dict):
    """How many processes left when asked and how many had to be killed, over every stop() call."""

    def __init__(self) -> None:
        super().__init__(graceful=0, killed=0)

    def add(self, counts: dict[str, int]) -> dict[str, int]:
        for key, value in counts.items():
            self[key] += value
        return dict(self)


def stop_processes(
    processes: list[subprocess.Popen], grace: float, signum: int = signal.SIGTERM
) -> dict[str, int]:
    """Each process leads its own process group (start_new_session)."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        _signal_group(process, signum)
    deadline = time.monotonic() + grace
    graceful = killed = 0
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
            graceful += 1
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(10)
            killed += 1
    for process in running:  # children it may have started (its group) go too
        _signal_group(process, signal.SIGKILL)
    return {"graceful": graceful, "killed": killed}


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
