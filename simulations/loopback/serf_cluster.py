"""N HashiCorp Serf agents on 127.0.0.1 (Debian's `serf`), the baseline formd is compared with.

Each agent gets its own gossip and RPC ports, one shared encryption key (formd's frames are
sealed too, so both sides pay for encryption) and Serf's `lan` profile, untouched. The harness
talks to the agents over Serf's RPC protocol (msgpack over TCP, what `serf members` and
`serf tags` use) through one persistent connection per agent: a `members` call costs ~0.1 ms,
so polling it every 10 ms measures propagation, not the poller.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

from .formd_cluster import STOP_GRACE_S, StopTally, free_port, process_entry, stop_processes, wait_until
from .measure import Observer

SERF = shutil.which("serf") or "/usr/bin/serf"

# memberlist's DefaultLANConfig, which `serf agent` uses unchanged (-profile lan).
SERF_LAN_DEFAULTS = {
    "gossip_interval_ms": 200,
    "gossip_nodes": 3,
    "probe_interval_ms": 1000,
    "probe_timeout_ms": 500,
    "suspicion_mult": 4,
    "suspicion_max_timeout_mult": 6,
    "retransmit_mult": 4,
    "push_pull_interval_s": 30,
}


class SerfRpcError(RuntimeError):
    pass


class SerfRpc:
    """A minimal client of the Serf agent RPC protocol (handshake, members, tags)."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self._sock = socket.create_connection(address, timeout=timeout)
        self._unpacker = msgpack.Unpacker(raw=False)
        self._seq = 0
        try:
            self._request("handshake", {"Version": 1})
        except BaseException:
            self.close()
            raise

    def members(self) -> list[dict[str, Any]]:
        return self._request("members", body_expected=True)["Members"]

    def set_tags(self, tags: dict[str, str]) -> None:
        self._request("tags", {"Tags": tags, "DeleteTags": []})

    def fetch(self) -> list[dict[str, Any]]:
        return self.members()

    def close(self) -> None:
        self._sock.close()

    def _request(self, command: str, body: dict | None = None, *, body_expected: bool = False) -> Any:
        self._seq += 1
        payload = msgpack.packb({"Command": command, "Seq": self._seq})
        if body is not None:
            payload += msgpack.packb(body)
        self._sock.sendall(payload)
        header = self._next()
        if header.get("Error"):
            raise SerfRpcError(f"serf {command}: {header['Error']}")
        return self._next() if body_expected else None

    def _next(self) -> Any:
        while True:
            for item in self._unpacker:
                return item
            chunk = self._sock.recv(65536)
            if not chunk:
                raise SerfRpcError("serf agent closed the RPC connection")
            self._unpacker.feed(chunk)


class SerfAgent:
    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.bind = ("127.0.0.1", free_port())
        self.rpc = ("127.0.0.1", free_port())
        self.log_path = root / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, key: str, join: "SerfAgent | None") -> None:
        command = [
            SERF,
            "agent",
            "-node",
            self.name,
            "-bind",
            f"{self.bind[0]}:{self.bind[1]}",
            "-rpc-addr",
            f"{self.rpc[0]}:{self.rpc[1]}",
            "-encrypt",
            key,
        ]
        if join is not None:
            command += ["-join", f"{join.bind[0]}:{join.bind[1]}"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def wait_ready(self) -> None:
        def answers() -> bool:
            if not self.running():
                raise RuntimeError(f"serf agent {self.name} exited; see {self.log_path}")
            SerfRpc(self.rpc).close()
            return True

        wait_until(answers, 30, f"serf agent {self.name} to answer RPC", interval=0.05)


class SerfCluster:
    def __init__(self, root: Path, size: int, say: Callable[[str], None] = print) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.key = base64.b64encode(os.urandom(32)).decode()  # AES-256-GCM, like formd's 256-bit key
        self.agents = [SerfAgent(root, f"s{index}") for index in range(size)]
        self.pids: list[dict[str, Any]] = []
        self.stopped = StopTally()

    def start(self, timeout: float = 120.0) -> float:
        """Agent s0 first (the others join it), then the rest; seconds until all see all alive."""
        began = time.monotonic()
        seed = self.agents[0]
        self._start_agent(seed, None)
        seed.wait_ready()
        for agent in self.agents[1:]:
            self._start_agent(agent, seed)
        names = {a.name for a in self.agents}

        def everyone_sees_everyone() -> bool:
            for agent in self.agents:
                rpc = SerfRpc(agent.rpc)
                try:
                    alive = {m["Name"] for m in rpc.members() if m["Status"] == "alive"}
                finally:
                    rpc.close()
                if not names <= alive:
                    return False
            return True

        wait_until(
            everyone_sees_everyone, timeout, f"{len(names)} serf agents to see each other alive", interval=0.2
        )
        return time.monotonic() - began

    def _start_agent(self, agent: SerfAgent, join: SerfAgent | None) -> None:
        agent.start(self.key, join)
        self.pids.append(process_entry(agent.name, agent.process, "serf"))
        self.say(f"started serf {agent.name} pid={agent.process.pid} bind={agent.bind[1]} rpc={agent.rpc[1]}")

    def observers(self) -> list[Observer]:
        return [Observer(a.name, lambda a=a: SerfRpc(a.rpc), a.running) for a in self.agents if a.running()]

    def set_tag(self, index: int, key: str, value: str) -> None:
        rpc = SerfRpc(self.agents[index].rpc)
        try:
            rpc.set_tags({key: value})
        finally:
            rpc.close()

    def kill(self, index: int) -> None:
        process = self.agents[index].process
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> dict[str, int]:
        # SIGTERM: Serf shuts down at once without a leave (leave_on_terminate is off by default).
        return self.stopped.add(
            stop_processes([a.process for a in self.agents if a.process is not None], STOP_GRACE_S)
        )
