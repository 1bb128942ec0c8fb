"""N formd nodes on N separate "hosts": one network namespace each, all on one bridge, each
host with (when asked) its own Podman service and image store.

    with NetnsCluster(root, 3, podman=[2], base_image=[2]) as hosts:
        hosts.init_all()        # formd init --listen 0.0.0.0:7946 --seed <host 0>:7946 ...
        hosts.start_all()       # formd run, inside each host's namespace
        hosts.nodes[0].form("nodes")

A node is a tests/procs.py Formd whose commands run under `nsenter --net` and whose
listen/advertise follow a real deployment: listen on 0.0.0.0:7946, advertise what
`formd init` works out. Control sockets are files, reachable from outside the namespaces.

Everything is undone on exit, on an error and on a failed start: formd processes killed,
Podman services stopped, stores unmounted and removed, namespaces (with the bridge) deleted,
the state root removed unless keep.

Delay and loss (delay_ms, loss): this kernel has no sch_netem, so loss is an iptables rule
and delay a relay in each host that inbound formd connections are redirected through
(Network.impair).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Iterable

from pack_manager.base_image import ensure_base_image

from .network import RUN_DIRS, Host, Network
from .podman_store import PodmanStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from procs import TEST_SETTINGS, Formd  # noqa: E402

PORT = 7946
LISTEN = f"0.0.0.0:{PORT}"


def host_formd(state_dir: Path, name: str, host: Host) -> Formd:
    """A Formd that runs in `host`'s namespace, listening on every interface of that host."""
    node = Formd(state_dir, name)
    node.port = PORT
    node.listen = LISTEN
    node.address = f"{host.address}:{PORT}"  # what `formd init` is expected to advertise
    node.enter = host.enter
    return node


class NetnsCluster:
    def __init__(
        self,
        root: Path,
        size: int,
        *,
        podman: Iterable[int] = (),
        base_image: Iterable[int] = (),
        delay_ms: float = 0.0,
        loss: float = 0.0,
        keep: bool = False,
    ) -> None:
        """delay_ms/loss: see Network.impair (one-way delay on every connection to a node, and
        the chance of each inbound packet being dropped)."""
        self.root = root
        self.keep = keep
        self.impairment = {"delay_ms": delay_ms, "loss": loss}
        self.network = Network(size)
        self.nodes = [host_formd(root / f"n{i}", f"n{i}", host) for i, host in enumerate(self.network.hosts)]
        self.stores: dict[int, PodmanStore] = {
            i: PodmanStore(
                root / f"podman-{i}",
                self.network.hosts[i].enter,
                RUN_DIRS / f"formnet-{self.network.run_id}-{i}",
            )
            for i in sorted(set(podman))
        }
        self.base_image = sorted(set(base_image))
        if not set(self.base_image) <= set(self.stores):
            raise ValueError("base_image: only hosts with podman have an image store")

    @property
    def hosts(self) -> list[Host]:
        return self.network.hosts

    def __enter__(self) -> "NetnsCluster":
        try:
            self.start_hosts()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start_hosts(self) -> None:
        """Namespaces and bridge, then each Podman store (seeded with the base image if asked)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.network.start()
        self.network.impair(PORT, **self.impairment)
        for index, store in self.stores.items():
            store.start()
            if index in self.base_image:
                ensure_base_image(store.url)

    def settings(self, index: int) -> dict[str, str]:
        """Test timings; a host with a store offers Podman through it, the others WASM only."""
        store = self.stores.get(index)
        if store is None:
            return dict(TEST_SETTINGS)
        return {**TEST_SETTINGS, "executors": '["podman", "wasm"]', "podman_url": json.dumps(store.url)}

    def init_all(
        self, labels: dict[int, list[str]] | None = None, settings: dict[str, str] | None = None
    ) -> None:
        """`formd init` on every host the way the README deploys: host 0 makes the cluster key;
        every other host gets it and --seed <host 0>:7946. No --advertise anywhere."""
        labels = labels or {}
        first = self.nodes[0]
        for index, node in enumerate(self.nodes):
            node.init(
                seeds=[first.address] if index else [],
                key_file=first.key_file if index else None,
                labels=labels.get(index, ()),
                settings={**self.settings(index), **(settings or {})},
            )

    def start_all(self) -> None:
        for node in self.nodes:
            node.start(new_session=True)

    def leftover_containers(self) -> dict[int, list[str]]:
        return {i: names for i, store in self.stores.items() if (names := store.containers())}

    def close(self) -> dict[str, Any]:
        """Undo everything (safe to call twice); returns what would not go, for the caller to check."""
        for node in self.nodes:
            if node.running():
                node.process.send_signal(signal.SIGKILL)
                node.process.wait(10)
        for store in self.stores.values():
            store.close()
        stuck = self.network.close()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        return {"namespaces_stuck": stuck}
