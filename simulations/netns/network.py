"""Separate "hosts" on one machine: one network namespace per host, all on one bridge.

    hub namespace   br0 10.251.X.1/24 (every host's gateway; it routes nowhere else)
    host i          eth0 10.251.X.(10+i)/24, default route via 10.251.X.1

The bridge lives in a namespace of its own, so no interface or address appears on the
machine's real network and no packet can leave it. Namespace names carry a run id (the
creating process's pid and a random part), so runs side by side never meet, and start() first
sweeps away what runs whose process is gone left behind. Processes enter a host with
`nsenter --net=...`, which changes only the network namespace: `ip netns exec` also remounts
/sys, and then runc finds no cgroup tree and every container fails.

A link between two hosts goes down with cut() (unreachable routes in both). Delay and loss
(impair()): this kernel has no sch_netem, so loss is an iptables rule dropping
inbound packets at random, and delay a relay process in each host that every inbound
connection for one TCP port is redirected through (simulations/netns/delay_relay.py).

Needs root (ip netns). close() stops the relays and deletes every namespace this Network made
(with them go the veth pairs, the bridge and the iptables rules); it is safe to call twice and
after a failed start.
"""

from __future__ import annotations

import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

NETNS_DIR = Path("/run/netns")
FIRST_HOST = 10
RELAY_PORT_OFFSET = 10_000  # the delay relay listens on the delayed port + this
RELAY_START_TIMEOUT_S = 20.0
RUN_DIRS = Path("/run")  # where per-run runtime dirs go (Podman runroots: short paths, a tmpfs)
ABANDONED_NAME = re.compile(r"formnet-(?P<pid>\d+)-[0-9a-f]{4}-.+")


class NetworkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Host:
    name: str  # the network namespace
    address: str  # its one address on the bridge

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a program inside this host's network."""
        return ["nsenter", f"--net={NETNS_DIR / self.name}"]


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class Network:
    def __init__(self, size: int, run_id: str | None = None, subnet: int | None = None) -> None:
        if not 1 <= size <= 200:
            raise NetworkError("a network holds 1 to 200 hosts")
        # The creating process's pid first: sweep_abandoned() knows a run whose creator is gone.
        self.run_id = run_id or f"{os.getpid()}-{random.getrandbits(16):04x}"
        self.prefix = f"10.251.{subnet if subnet is not None else random.randrange(1, 255)}"
        self.hub = f"formnet-{self.run_id}-hub"
        self.gateway = f"{self.prefix}.1"
        self.hosts = [
            Host(f"formnet-{self.run_id}-h{i}", f"{self.prefix}.{FIRST_HOST + i}") for i in range(size)
        ]
        self.made: list[str] = []  # namespaces created, deleted by close()
        self.relays: list[subprocess.Popen] = []  # delay relays, stopped by close()

    def __enter__(self) -> "Network":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        reason = unavailable()
        if reason:
            raise NetworkError(reason)
        sweep_abandoned()
        self._namespace(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{self.gateway}/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts):
            self._namespace(host.name)
            port = f"v{index}"
            _ip(*f"link add eth0 netns {host.name} type veth peer name {port} netns {self.hub}".split())
            _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            _ip("-n", host.name, "route", "add", "default", "via", self.gateway)

    def _namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.made.append(name)

    def impair(self, port: int, delay_ms: float = 0.0, loss: float = 0.0) -> None:
        """Delay and loss on every host, where this kernel allows them (it has no sch_netem):
        loss drops each inbound packet on eth0 with that probability (iptables statistic);
        delay sends every inbound TCP connection for `port` through a delay relay in the host
        (iptables REDIRECT to simulations/netns/delay_relay.py), `delay_ms` each way."""
        if not 0.0 <= loss < 1.0:
            raise NetworkError("loss is a probability from 0 to below 1")
        if delay_ms < 0:
            raise NetworkError("delay must not be negative")
        for host in self.hosts:
            if delay_ms > 0:
                self._delay(host, port, delay_ms)
            if loss > 0:
                rule = ["-i", "eth0", "-m", "statistic", "--mode", "random", "--probability", f"{loss:.6f}"]
                _run([*host.enter, "iptables", "-A", "INPUT", *rule, "-j", "DROP"])

    @contextmanager
    def cut(self, a: int, b: int) -> Iterator[None]:
        """No route between hosts a and b while the block runs (each gets "no route to host"
        at once); both still reach every other host: a firewall between two machines."""
        pairs = [(self.hosts[a], self.hosts[b]), (self.hosts[b], self.hosts[a])]
        for host, other in pairs:
            _ip("-n", host.name, "route", "add", "unreachable", f"{other.address}/32")
        try:
            yield
        finally:
            for host, other in pairs:
                _ip("-n", host.name, "route", "del", "unreachable", f"{other.address}/32")

    def _delay(self, host: Host, port: int, delay_ms: float) -> None:
        relay_port = port + RELAY_PORT_OFFSET
        process = subprocess.Popen(
            [*host.enter, sys.executable, "-m", "simulations.netns.delay_relay", "--port", str(relay_port)]
            + ["--to-port", str(port), "--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.relays.append(process)
        ready, _, _ = select.select([process.stdout], [], [], RELAY_START_TIMEOUT_S)
        if not ready or process.stdout.readline().strip() != b"listening":
            raise NetworkError(f"the delay relay in {host.name} did not start")
        redirect = [
            "-p",
            "tcp",
            "-i",
            "eth0",
            "--dport",
            str(port),
            "-j",
            "REDIRECT",
            "--to-ports",
            str(relay_port),
        ]
        _run([*host.enter, "iptables", "-t", "nat", "-A", "PREROUTING", *redirect])

    def close(self) -> list[str]:
        """Delete every namespace made; returns the ones that would not go (still in use)."""
        for process in self.relays:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.relays = []
        stuck = []
        for name in reversed(self.made):
            done = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
            if done.returncode != 0 and (NETNS_DIR / name).exists():
                stuck.append(f"{name}: {done.stderr.strip()}")
        self.made = []
        return stuck

    def exists(self) -> list[str]:
        """The namespaces of this run still present (empty after close())."""
        return [h for h in [self.hub, *(host.name for host in self.hosts)] if (NETNS_DIR / h).exists()]


def sweep_abandoned() -> list[str]:
    """Remove what runs whose creating process no longer exists left behind (a harness killed
    with SIGKILL cannot clean up): the processes in their namespaces, the namespaces, and
    their runtime dirs under /run. Runs of live processes are never touched."""
    swept = []
    names = [p.name for p in NETNS_DIR.iterdir()] if NETNS_DIR.is_dir() else []
    leftovers = [p.name for p in RUN_DIRS.glob("formnet-*")]
    for name in names + leftovers:
        match = ABANDONED_NAME.fullmatch(name)
        if match is None or Path(f"/proc/{match['pid']}").exists():
            continue
        if name in names:
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        else:
            subprocess.run(["umount", "-R", "-l", str(RUN_DIRS / name)], capture_output=True)
            shutil.rmtree(RUN_DIRS / name, ignore_errors=True)
        swept.append(name)
    return swept


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(command)}: {done.stderr.strip()}")
