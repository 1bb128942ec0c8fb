"""The simulated cluster: machines that run formd's Node and JobLoop over the simulated network.

A Machine is the host: its key, its address, what its state dir holds. The formd process on
it (Node + JobLoop + a fresh client id and incarnation, as `formd run` builds them in
daemon/runtime.py) comes and goes with crashes and restarts.

Persistence. A crash is kill -9 of formd: every update it appended to its document log is
in the page cache and survives, so a restart replays exactly the document the process
held. Instead of keeping every log entry in memory for 1000 nodes, the machine keeps that
document's full state at the crash instant (what replaying the log yields) and the restart
rebuilds from it with ClusterDocument.from_updates, as formd does. A *wiped* restart comes
back with an empty state dir: no document, no blobs, no incarnation file, and (since the
key lives in the state dir) a new key, so it joins as a new node while its old identity
stays dead for good. With `--wipe-keeps-key` the key file survived (a re-imaged host with
its key restored): same node id, but its incarnation starts again at 1.

What differs from a real formd, on purpose: capacity is static (the machine's size less
the reservations of the jobs it runs; no psutil sampling), the executor is simulated
(simulations/sim/executor.py), the store is in memory, and time is trio's MockClock
(the node's wall clock is EPOCH + simulated seconds). Finished jobs are retired after
formd's default retention (24 h), so within a run none is.
"""

from __future__ import annotations

import functools
import random
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.document import ClusterDocument
from crdt_state.records import DIRECT, NodeRecord, Openers
from daemon.cluster.membership import MembershipConfig
from daemon.cluster.node import Node, NodeSettings, static_capacity
from daemon.config import FormdConfig
from daemon.identity import Identity
from daemon.jobs.blobstore import BlobStore
from daemon.jobs.loop import JobLoop
from daemon.jobs.peer_requests import LiveLogs, PeerRequests
from daemon.jobs.placement_orders import OrderNodes
from daemon.jobs.wakeup import Wakeup
from daemon.log import EventLog
from daemon.runtime import node_settings
from daemon.transport.keyring import Keyring
from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import Reservation, apply_reservations
from pack_manager import scheduling

from .executor import SimulatedExecutor
from .network import SlowLinkNetwork
from .options import SimOptions

EPOCH = 1_700_000_000.0  # the simulated wall clock reads EPOCH + trio.current_time()
SEEDS = 3  # the first machines are every node's seeds
CAPABILITIES = NodeCapabilities(
    cpu_model="simulated",
    logical_cores=4,
    physical_cores=4,
    cpu_millicores=4000,
    memory_bytes=8 << 30,
    disk_bytes=100 << 30,
    arch="x86_64",
    os="linux",
    kernel="simulated",
    executors=("wasm",),
)


def capability_records(options: SimOptions) -> dict[int, NodeCapabilities]:
    """Machine index -> its record, for the machines that offer named capabilities (the others
    share CAPABILITIES). Records are shared, one per distinct set, so 1000 nodes cost a few
    records; the offering machines are drawn from their own seeded Random, so the run's other
    draws stay what they are without capabilities."""
    if not options.capabilities:
        return {}
    count = options.capability_nodes.of(options.nodes)
    chosen = random.Random(f"capability-nodes/{options.seed}").sample(range(options.nodes), count)
    shared: dict[tuple[tuple[str, int], ...], NodeCapabilities] = {}
    records = {}
    for index in sorted(chosen):
        offered = options.capabilities
        if offered not in shared:
            shared[offered] = CAPABILITIES.with_named(dict(offered))
        records[index] = shared[offered]
    return records


def sim_wall_clock() -> float:
    return EPOCH + trio.current_time()


def address_of(index: int) -> str:
    number = index + 1
    return f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}:7946"


@dataclass(frozen=True)
class SlowedSettings(NodeSettings):
    """A slow node's timers (tick, gossip, job loop passes) run `slowdown` times longer, but
    its failure detector keeps the configured heartbeat interval: a busy machine fires late,
    it is not configured differently (else it would take peers for dead much later)."""

    slowdown: float = 1.0

    def membership_config(self) -> MembershipConfig:
        return replace(super().membership_config(), heartbeat_interval=self.tick_interval / self.slowdown)


class SimNode(Node):
    """formd's Node with one switch for the end of a run: `ticks.cancel()` stops its
    heartbeats (no more writes) while gossip and anti-entropy go on, so the documents can
    settle and be compared.

    `resume(record)`: this start continues the process that wrote `record` (--warm-start).
    Node.run writes the record once at start, as a process starting must; a process that has
    been running does not, and 1000 nodes doing it at one instant is a storm (1000 new updates
    for every node in the first simulated second, each checked: 240 real seconds at 1000
    nodes) that no running cluster sees. So that first write is skipped; the periodic
    refreshes follow as they would (spread over the refresh interval by Node.run)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ticks = trio.CancelScope()
        self._resumed_capacity: dict | None = None

    def resume(self, record: NodeRecord) -> None:
        self.heartbeat = record.heartbeat
        self.joined = True  # joined long ago: no state exchange with the seeds
        self._resumed_capacity = record.capacity

    def publish(self, **kwargs: Any) -> None:
        if self._resumed_capacity is not None:
            # What the running process wrote last: a reservation change still writes early.
            self._written_capacity, self._resumed_capacity = self._resumed_capacity, None
            return
        super().publish(**kwargs)

    async def _tick_loop(self) -> None:
        with self.ticks:
            await super()._tick_loop()


class MemoryStore:
    """The Store the node appends to. Counts what it is given; the machine takes the
    document's state at a crash instead of keeping the entries (see the module docstring)."""

    def __init__(self) -> None:
        self.appends = 0
        self.bytes = 0

    def append(self, update: bytes, durable: bool) -> None:
        self.appends += 1
        self.bytes += len(update)

    def snapshot(self, full_state: bytes) -> None:
        pass


class SimLog(EventLog):
    """Hands every log line of one node to the run's recorder instead of printing it."""

    def __init__(self, sink: Callable[[int, int, str, dict], None], index: int) -> None:
        super().__init__()
        self._sink = sink
        self._index = index

    def _emit(self, level: int, message: str, fields: dict[str, Any]) -> None:
        self._sink(self._index, level, message, fields)


@dataclass
class Machine:
    index: int
    address: str
    identities: list[Identity]  # the first one, then one more per wiped restart
    root: Path
    slow: bool = False
    saved: list[bytes] = field(default_factory=list)  # what a restart replays
    incarnation: int = 0  # the incarnation file
    node: SimNode | None = None
    loop: JobLoop | None = None
    scope: trio.CancelScope | None = None
    loop_scope: trio.CancelScope | None = None
    executor: SimulatedExecutor = field(default_factory=SimulatedExecutor)
    starts: int = 0

    @property
    def up(self) -> bool:
        return self.node is not None

    @property
    def identity(self) -> Identity:
        return self.identities[-1]

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    def name(self, identity: Identity) -> str:
        number = self.identities.index(identity)
        return f"n{self.index}" if number == 0 else f"n{self.index}/{number + 1}"

    def bump_incarnation(self, at_least: int) -> int:
        self.incarnation = max(self.incarnation, at_least) + 1
        return self.incarnation


class World:
    def __init__(
        self,
        options: SimOptions,
        rng: random.Random,
        root: Path,
        nursery: trio.Nursery,
        log_sink: Callable[[int, int, str, dict], None],
        on_change: Callable[["Machine"], None],
        *,
        on_run: Callable[["Machine", Any], Callable[[], None]] | None = None,
        openers: Openers = DIRECT,
        order_nodes: OrderNodes = scheduling.order_nodes,
    ) -> None:
        self.options = options
        self.openers = openers  # every node's document verifies records with these
        self.order_nodes = order_nodes  # every node's job loop ranks nodes with this
        self.rng = rng
        self.root = root
        self.nursery = nursery
        self.log_sink = log_sink
        self.on_change = on_change
        self.network = SlowLinkNetwork(seed=rng.getrandbits(64), latency=options.latency, loss=options.loss)
        self.keyring = Keyring(rng.randbytes(32)) if options.seal else None
        self.settings = node_settings(
            replace(
                FormdConfig(),
                gossip_interval_ms=round(options.gossip_interval * 1000),
                gossip_fanout=options.fanout,
                tick_interval_ms=round(options.tick_interval * 1000),
                anti_entropy_interval_s=options.anti_entropy_interval,
                retransmit_mult=options.retransmit_mult,
                heartbeat_retransmit_mult=options.heartbeat_retransmit_mult,
            )
        )  # the same mapping `formd run` applies to formd.toml
        self.capability_records = capability_records(options)
        self.machines: list[Machine] = []
        for index in range(options.nodes):
            machine = Machine(index, address_of(index), [self._new_identity()], root / f"n{index}")
            if on_run is not None:
                machine.executor = SimulatedExecutor(on_run=functools.partial(on_run, machine))
            self.machines.append(machine)
        self.seeds = [m.address for m in self.machines[:SEEDS]]

    def capabilities_of(self, machine: Machine) -> NodeCapabilities:
        return self.capability_records.get(machine.index, CAPABILITIES)

    def _new_identity(self) -> Identity:
        return Identity.from_private_key(Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32)))

    # ---- who is up ----------------------------------------------------------------------------

    def up(self) -> list[Machine]:
        return [m for m in self.machines if m.up]

    def make_slow(self, machine: Machine) -> None:
        machine.slow = True
        self.network.extra_latency[machine.address] = self.options.slow_latency

    # ---- a formd process starting, crashing, coming back -------------------------------------

    async def start(self, machine: Machine) -> None:
        identity = machine.identity
        document = ClusterDocument.from_updates(
            machine.saved, identity.node_id, client_id=self.rng.getrandbits(32) | 1, openers=self.openers
        )
        held = document.get("nodes", identity.node_hex)
        held_record = held.node if held is not None else None
        # --warm-start: the first start continues a process that was already running (warm_start.py),
        # with the record's incarnation and heartbeat; any later start is a restart.
        resumed = self.options.warm_start and machine.starts == 0 and held_record is not None
        if resumed:
            incarnation = machine.incarnation = held_record.incarnation
        else:
            incarnation = machine.bump_incarnation(held_record.incarnation if held_record is not None else 0)
        settings = self.settings
        if machine.slow:
            factor = self.options.slow_factor
            settings = SlowedSettings(
                **{
                    **asdict(settings),
                    "tick_interval": settings.tick_interval * factor,
                    "gossip_interval": settings.gossip_interval * factor,
                },
                slowdown=factor,
            )
        blobs = BlobStore(machine.root / "blobs")
        live_logs = LiveLogs()
        wakeup = Wakeup()
        reservations: dict[str, Reservation] = {}

        def sample(capabilities: NodeCapabilities):
            return apply_reservations(capabilities, static_capacity(capabilities), reservations.values())

        def changed() -> None:
            wakeup.set()
            self.on_change(machine)

        self.network.restore(machine.address)
        node = SimNode(
            identity=identity,
            address=machine.address,
            transport=self.network.transport(
                machine.address, keyring=self.keyring, on_drop=self._dropped(machine)
            ),
            document=document,
            capabilities=self.capabilities_of(machine),
            incarnation=incarnation,
            rng=random.Random(self.rng.getrandbits(64)),
            settings=settings,
            seeds=self.seeds,
            sample_capacity=sample,
            store=MemoryStore(),
            bump_incarnation=machine.bump_incarnation,
            wall_clock=sim_wall_clock,
            log=SimLog(self.log_sink, machine.index),
            version="sim",
            on_change=changed,
            side_handler=PeerRequests(blobs, live_logs).serve,
        )
        if resumed:
            node.resume(held_record)
        loop = JobLoop(
            node,
            blobs,
            machine.root / "work",
            {"wasm": machine.executor},
            policy=self.options.policy,
            retention_s=FormdConfig().job_retention_s,
            wakeup=wakeup,
            live_logs=live_logs,
            reservations=reservations,
            order_nodes=self.order_nodes,
        )
        loop.configure_document()
        machine.node, machine.loop = node, loop
        machine.scope, machine.loop_scope = trio.CancelScope(), trio.CancelScope()
        machine.starts += 1

        async def run_loop(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with machine.loop_scope:
                await loop.run(task_status=task_status)

        async def run_machine(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with machine.scope:
                async with trio.open_nursery() as inner:
                    await inner.start(node.run)
                    await inner.start(run_loop)
                    task_status.started()

        await self.nursery.start(run_machine)

    def crash(self, machine: Machine, *, wipe: bool = False) -> list[str]:
        """kill -9: the process is gone at once; returns the jobs it was running. With `wipe`
        the state dir is lost too (see the module docstring)."""
        assert machine.node is not None and machine.loop is not None and machine.scope is not None
        running = sorted(machine.loop.running)
        self.network.crash(machine.address)
        machine.saved = [machine.node.document.full_state()]
        machine.scope.cancel()
        machine.node = machine.loop = machine.scope = machine.loop_scope = None
        if wipe:
            machine.saved = []
            machine.incarnation = 0
            shutil.rmtree(machine.root, ignore_errors=True)
            if not self.options.wipe_keeps_key:
                machine.identities.append(self._new_identity())
        return running

    def freeze(self) -> None:
        """End of the run: no more heartbeats or job decisions on any node; gossip goes on."""
        for machine in self.up():
            assert machine.node is not None and machine.loop_scope is not None
            machine.node.ticks.cancel()
            machine.loop_scope.cancel()

    def _dropped(self, machine: Machine) -> Callable[[str, str], None]:
        def dropped(address: str, reason: str) -> None:
            self.log_sink(machine.index, 30, "bad frame dropped", {"from": address, "reason": reason})

        return dropped
