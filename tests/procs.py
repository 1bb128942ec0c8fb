"""Real formd processes on 127.0.0.1 for integration tests and benchmarks.

Each Formd gets a temp state dir made by the real `formd init`, a free port, fast test
timings, and its stderr in <state>/formd.log. `listen` and `enter` (a command prefix for init
and run) let simulations/netns put a node on a host of its own. Cluster (a context manager) kills every
process it started, whatever happens in the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

BIN = Path(sys.executable).parent

# Fast but not twitchy on 2 busy CI cores: suspect after 1 s of silence, dead after 3 s.
TEST_SETTINGS = {
    "tick_interval_ms": "200",
    "gossip_interval_ms": "50",
    "suspect_mult": "5.0",
    "dead_mult": "3.0",
    "anti_entropy_interval_s": "2.0",
    "request_timeout_ms": "1000",
    "executors": '["wasm"]',  # no Podman service per test node
}

# formd's shipped timing defaults (memberlist LAN-like), spelled out for benchmarks and the
# loopback harness so their figures say what they measured.
DEFAULT_TIMINGS = {
    "tick_interval_ms": "1000",
    "gossip_interval_ms": "200",
    "gossip_fanout": "3",
    "anti_entropy_interval_s": "30.0",
    "suspect_mult": "4.0",
    "dead_mult": "3.0",
    "request_timeout_ms": "2000",
}


def _command(name: str, module: str) -> list[str]:
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


FORMD = _command("formd", "daemon.main")
FORM = _command("form", "cli.main")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until condition() is truthy; fail with `what` after a generous deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # a node still starting, a socket not there yet
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(interval)


def formd_init(
    state_dir: Path, *args: str, check: bool = True, enter: Iterable[str] = ()
) -> subprocess.CompletedProcess:
    """enter: a command prefix that puts formd somewhere else (a host's network namespace)."""
    return subprocess.run(
        [*enter, *FORMD, "init", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def form(socket_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FORM, "--socket", str(socket_path), *args], capture_output=True, text=True, check=check, timeout=60
    )


class Formd:
    def __init__(self, state_dir: Path, name: str) -> None:
        self.name = name
        self.state_dir = state_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"  # what peers dial
        self.listen = self.address
        self.enter: list[str] = []  # command prefix for init and run (simulations/netns)
        self.http_port = free_port()
        self.http_url = f"https://127.0.0.1:{self.http_port}"
        self.socket = state_dir / "formd.sock"
        self.log_path = state_dir / "formd.log"
        self.process: subprocess.Popen | None = None
        self.node_id = ""
        self.env: dict[str, str] = {}  # added to formd's environment (a fake pynvml, say)

    def init(
        self,
        *,
        seeds: Iterable[str] = (),
        key_file: Path | None = None,
        labels: Iterable[str] = (),
        settings: dict[str, str] | None = None,
        init_args: Iterable[str] = (),
    ) -> str:
        args = ["--listen", self.listen, *init_args]
        for seed in seeds:
            args += ["--seed", seed]
        args += ["--cluster-key-file", str(key_file)] if key_file else ["--new-cluster-key"]
        for label in labels:
            args += ["--label", label]
        defaults = {**TEST_SETTINGS, "http_listen": f"127.0.0.1:{self.http_port}"}
        for key, value in {**defaults, **(settings or {})}.items():
            args += ["--set", f"{key}={value}"]
        result = formd_init(self.state_dir, *args, enter=self.enter)
        self.node_id = result.stdout.strip().splitlines()[-1]
        return self.node_id

    @property
    def key_file(self) -> Path:
        return self.state_dir / "cluster.key"

    def start(self, *, new_session: bool = False) -> "Formd":
        """new_session: run formd in its own process group, so a Ctrl-C meant for the caller does
        not reach it and the caller can stop it in order (the loopback harness)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [*self.enter, *FORMD, "run", "--state-dir", str(self.state_dir)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
                start_new_session=new_session,
            )
        finally:
            log.close()
        wait_until(
            lambda: self.socket.exists() and self.call("status"),
            30,
            f"{self.name} to serve its control socket",
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait (the graceful path); returns the exit status."""
        if not self.running():
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def call(self, method: str, params: dict | None = None) -> Any:
        from cli.client import call  # noqa: PLC0415

        return call(self.socket, method, params, timeout=10)

    def form_remote(
        self, key: str, fingerprint: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess:
        """`form --remote` against this node's HTTPS API with a client key."""
        remote = ["--remote", self.http_url, "--key", key, "--fingerprint", fingerprint]
        return subprocess.run(
            [*FORM, *remote, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def form(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return form(self.socket, *args, check=check)

    def grant_new_client_key(self, path: Path, role: str) -> str:
        """A new client key written to `path` and granted `role` on this node; its public key."""
        public = self.form("key", "generate", "-o", str(path)).stdout.strip().splitlines()[-1]
        self.form("acl", "grant", public, "--role", role)
        return public

    def nodes(self) -> list[dict]:
        """`form nodes --json` through the real CLI."""
        return json.loads(self.form("nodes", "--json").stdout)

    def statuses(self) -> dict[str, str]:
        return {node["id"]: node["status"] for node in self.call("nodes")}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """Nodes made under one directory; `with Cluster(tmp) as c:` kills them all on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Formd] = []

    def add(
        self,
        name: str,
        *,
        seed: Formd | None = None,
        key_file: Path | None = None,
        labels: Iterable[str] = (),
        settings: dict[str, str] | None = None,
        start: bool = True,
        env: dict[str, str] | None = None,
        init_args: Iterable[str] = (),
    ) -> Formd:
        node = Formd(self.root / name, name)
        node.env = dict(env or {})
        self.nodes.append(node)
        if key_file is None and self.nodes[0] is not node:
            key_file = self.nodes[0].key_file
        node.init(
            seeds=[seed.address] if seed else [],
            key_file=key_file,
            labels=labels,
            settings=settings,
            init_args=init_args,
        )
        if start:
            node.start()
        return node

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            if node.running():
                node.process.send_signal(signal.SIGKILL)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(node.process.pid, signal.SIGKILL)


def all_see(observers: Iterable[Formd], node_ids: Iterable[str], status: str = "alive") -> bool:
    wanted = set(node_ids)
    for observer in observers:
        statuses = observer.statuses()
        if not all(statuses.get(node_id) == status for node_id in wanted):
            return False
    return True


def job_status(node: Formd, job_id: str) -> dict:
    """`form status JOB --json` on one node, parsed."""
    return json.loads(node.form("status", job_id, "--json").stdout)


def compile_wasi(source: Path, output: Path) -> Path:
    """A C file to a wasm32-wasi module with Debian's clang/lld/wasi-libc (installed by setup-host.sh)."""
    subprocess.run(
        ["clang", "--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o", str(output), str(source)], check=True
    )
    return output
