"""The node driver over the simulated network under MockClock: the same code formd runs."""

import random

import pytest
import trio
import trio.testing

from crdt_state.document import ClusterDocument
from daemon.identity import Identity
from daemon.log import EventLog
from daemon.mem_transport import SimNetwork
from daemon.node import Node, NodeSettings
from metrics_agent.capabilities import NodeCapabilities
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SETTINGS = NodeSettings(gossip_interval=0.2, tick_interval=1.0, anti_entropy_interval=10.0, request_timeout=1.0)
CAPS = NodeCapabilities(
    cpu_model="sim", logical_cores=4, physical_cores=4, cpu_millicores=4000, memory_bytes=8 << 30,
    disk_bytes=100 << 30, arch="x86_64", os="sim", kernel="sim", executors=("wasm",),
)


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


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
    def __init__(self, nursery, network, seed=1):
        self.nursery = nursery
        self.network = network
        self.rng = random.Random(seed)
        self.keys = {}
        self.stores = {}
        self.incarnations = {}
        self.nodes = {}
        self.scopes = {}
        self.logs = {}

    async def start(self, address, seeds=(), labels=None):
        key = self.keys.setdefault(address, Ed25519PrivateKey.generate())
        identity = Identity.from_private_key(key)
        store = self.stores.setdefault(address, ListStore())
        self.incarnations[address] = self.incarnations.get(address, 0) + 1
        self.network.restore(address)
        node = Node(
            identity=identity, address=address, transport=self.network.transport(address),
            document=ClusterDocument.from_updates(store.updates, identity.node_id),
            capabilities=CAPS.with_labels(labels or {}), incarnation=self.incarnations[address],
            rng=random.Random(self.rng.random()), settings=SETTINGS, seeds=seeds, store=store,
            log=self.logs.setdefault(address, RecordingLog()),
        )
        scope = trio.CancelScope()
        self.scopes[address] = scope
        self.nodes[address] = node

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await node.run(task_status=task_status)

        await self.nursery.start(run)
        return node

    def crash(self, address):
        self.network.crash(address)
        self.scopes[address].cancel()

    def statuses(self, observer):
        node = self.nodes[observer]
        return {record.address: node.peer_status(node_id) for node_id, record in node.document.node_records().items()}

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


async def test_ten_nodes_converge_and_a_label_spreads(autojump_clock):
    network = SimNetwork(seed=3, latency=(0.001, 0.01))
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        addresses = [f"10.0.0.{i}:7946" for i in range(10)]
        await sim.start(addresses[0])
        for address in addresses[1:]:
            await sim.start(address, seeds=[addresses[0]])
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))

        sim.nodes[addresses[7]].set_labels({"zone": "b"})
        start = trio.current_time()

        def seen():
            return all(
                n.document.node_records()[sim.nodes[addresses[7]].identity.node_id].capabilities["labels"] == {"zone": "b"}
                for n in sim.nodes.values()
            )

        await wait_for(seen, step=0.01)
        # Epidemic push: a few gossip rounds, far below the 10 s anti-entropy interval.
        assert trio.current_time() - start < 5 * SETTINGS.gossip_interval * 3
        nursery.cancel_scope.cancel()


async def test_lossy_network_still_converges(autojump_clock):
    network = SimNetwork(seed=5, latency=(0.001, 0.05), loss=0.2)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        addresses = [f"10.0.1.{i}:7946" for i in range(8)]
        await sim.start(addresses[0])
        for address in addresses[1:]:
            await sim.start(address, seeds=[addresses[0]])
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        sim.nodes[addresses[3]].set_labels({"k": "v"})
        target = sim.nodes[addresses[3]].identity.node_id
        await wait_for(lambda: all(n.document.node_records()[target].capabilities["labels"] == {"k": "v"} for n in sim.nodes.values()))
        nursery.cancel_scope.cancel()


async def test_crash_suspect_dead_then_restart_rejoins_with_its_document(autojump_clock):
    network = SimNetwork(seed=7)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        addresses = [f"10.0.2.{i}:7946" for i in range(4)]
        await sim.start(addresses[0])
        for address in addresses[1:]:
            await sim.start(address, seeds=[addresses[0]])
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        victim = addresses[2]
        others = [a for a in addresses if a != victim]
        old_id = sim.nodes[victim].identity.node_id
        sim.crash(victim)
        await wait_for(lambda: sim.everyone_sees(others, [victim], "suspect"), step=0.05)
        await wait_for(lambda: sim.everyone_sees(others, [victim], "dead"), step=0.05)

        def events(address):
            return [m for m, f in sim.logs[address].lines if f.get("id") == old_id.hex()[:12]]

        await wait_for(lambda: all(events(a)[-1:] == ["peer dead"] for a in others))
        for address in others:
            assert events(address) == ["peer joined", "peer suspect", "peer dead"]

        node = await sim.start(victim, seeds=[addresses[0]])
        assert node.identity.node_id == old_id
        assert len(node.document.node_records()) == 4  # restored before any gossip
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        assert node.incarnation == 2
        await trio.sleep(3)  # a few more ticks: nobody refuses anything along the way
        for address in addresses:
            assert [f for m, f in sim.logs[address].lines if m.startswith("bad")] == []
            assert ("peer rejoined", {"id": old_id.hex()[:12], "addr": victim}) in sim.logs[address].lines or address == victim
        nursery.cancel_scope.cancel()


async def test_leave_is_seen_at_once(autojump_clock):
    network = SimNetwork(seed=9)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        addresses = [f"10.0.3.{i}:7946" for i in range(5)]
        await sim.start(addresses[0])
        for address in addresses[1:]:
            await sim.start(address, seeds=[addresses[0]])
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        leaver = addresses[4]
        await sim.nodes[leaver].leave()
        sim.crash(leaver)
        waited = await wait_for(lambda: sim.everyone_sees(addresses[:4], [leaver], "left"), step=0.01)
        assert waited < SETTINGS.tick_interval  # not a timeout: the left record itself
        nursery.cancel_scope.cancel()
