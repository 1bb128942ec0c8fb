"""Nodes on the simulated network under the mock clock, for the node-driver and job-loop tests:
`Sim` starts, crashes and restarts `Node`s the way formd does (the same code, an in-memory
transport and store), and `running_cluster` is the usual start-a-seeded-cluster-and-stop block."""

import contextlib
import random

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.document import ClusterDocument
from daemon.cluster.node import Node, NodeSettings
from daemon.identity import Identity
from daemon.log import EventLog
from daemon.transport.memory import SimNetwork
from metrics_agent.capabilities import NodeCapabilities

SETTINGS = NodeSettings(
    gossip_interval=0.2, tick_interval=1.0, anti_entropy_interval=10.0, request_timeout=1.0
)
CAPS = NodeCapabilities(
    cpu_model="sim",
    logical_cores=4,
    physical_cores=4,
    cpu_millicores=4000,
    memory_bytes=8 << 30,
    disk_bytes=100 << 30,
    arch="x86_64",
    os="sim",
    kernel="sim",
    executors=("wasm",),
)


class ListStore:
    """The persistence a node needs, kept in memory (a restart rebuilds from it)."""

    def __init__(self):
        self.updates = []

    def append(self, update, durable):
        self.updates.append(update)

    def snapshot(self, full_state):
        self.updates = [full_state]


class RecordingLog(EventLog):
    def __init__(self):
        super().__init__()
        self.lines = []

    def _emit(self, level, message, fields):
        self.lines.append((message, fields))


class Sim:
    def __init__(self, nursery, network, seed=1, settings=SETTINGS):
        self.nursery = nursery
        self.network = network
        self.settings = settings
        self.rng = random.Random(seed)
        self.keys = {}
        self.stores = {}
        self.incarnations = {}
        self.nodes = {}
        self.scopes = {}
        self.logs = {}

    async def start_cluster(self, addresses):
        """Start every address, all joining through the first, and wait until all see all alive."""
        await self.start(addresses[0])
        for address in addresses[1:]:
            await self.start(address, seeds=[addresses[0]])
        await wait_for(lambda: self.everyone_sees(addresses, addresses))

    async def start(self, address, seeds=(), labels=None, client_id=None):
        # Keys and client ids from the seeded rng too: node ids order probes, ranks and CRDT ties.
        if address not in self.keys:
            self.keys[address] = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        key = self.keys[address]
        if client_id is None:
            client_id = self.rng.getrandbits(31) | 1  # a fresh one at every start, as formd takes
        identity = Identity.from_private_key(key)
        store = self.stores.setdefault(address, ListStore())
        self.incarnations[address] = self.incarnations.get(address, 0) + 1
        self.network.restore(address)
        node = Node(
            identity=identity,
            address=address,
            transport=self.network.transport(address),
            document=ClusterDocument.from_updates(store.updates, identity.node_id, client_id=client_id),
            capabilities=CAPS.with_labels(labels or {}),
            incarnation=self.incarnations[address],
            rng=random.Random(self.rng.random()),
            settings=self.settings,
            seeds=seeds,
            store=store,
            log=self.logs.setdefault(address, RecordingLog()),
            bump_incarnation=lambda at_least: self._bump_incarnation(address, at_least),
        )
        scope = trio.CancelScope()
        self.scopes[address] = scope
        self.nodes[address] = node

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await node.run(task_status=task_status)

        await self.nursery.start(run)
        return node

    def _bump_incarnation(self, address, at_least):
        """What daemon.identity.bump_incarnation does to the incarnation file."""
        self.incarnations[address] = max(self.incarnations[address], at_least) + 1
        return self.incarnations[address]

    def crash(self, address):
        self.network.crash(address)
        self.scopes[address].cancel()

    def lose_state(self, address):
        """The state dir is gone but the key survives (node.key restored into a fresh state
        dir): no document, no incarnation file."""
        self.stores[address] = ListStore()
        self.incarnations[address] = 0

    def statuses(self, observer):
        node = self.nodes[observer]
        return {
            record.address: node.peer_status(node_id)
            for node_id, record in node.document.node_records().items()
        }

    def everyone_sees(self, observers, targets, status="alive"):
        return all(self.statuses(o).get(t) == status for o in observers for t in targets)


async def wait_for(condition, limit=120.0, step=0.1):
    """Trio (mock) time passes only while we sleep; fail when the limit of sim time passes."""
    waited = 0.0
    while not condition():
        await trio.sleep(step)
        waited += step
        assert waited < limit, "condition not reached in simulated time"
    return waited


@contextlib.asynccontextmanager
async def running_cluster(subnet, count, *, sim_seed=1, settings=SETTINGS, **network_options):
    """`count` nodes at 10.0.<subnet>.i on a SimNetwork(**network_options), all joined through
    the first and seeing all alive; stopped when the block ends."""
    network = SimNetwork(**network_options)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network, seed=sim_seed, settings=settings)
        addresses = [f"10.0.{subnet}.{i}:7946" for i in range(count)]
        await sim.start_cluster(addresses)
        yield sim, addresses
        nursery.cancel_scope.cancel()
