"""Node.cluster_size() reads a count the document keeps as node records change (it is asked
for on every accepted update); the kept count must follow joins, leaves and restores like a
fresh count of the records does."""

import random

import trio
from sim_nodes import SETTINGS, Sim, wait_for

from daemon.transport.memory import SimNetwork


def fresh_count(node):
    return max(1, sum(1 for r in node.document.node_records().values() if r.status != "left"))


async def test_cluster_size_follows_joins_and_leaves(autojump_clock):
    network = SimNetwork(seed=4)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network, seed=random.Random(4).random())
        addresses = [f"10.0.4.{i}:7946" for i in range(5)]
        first = await sim.start(addresses[0])
        assert first.cluster_size() == 1
        for address in addresses[1:]:
            await sim.start(address, seeds=[addresses[0]])
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        assert [sim.nodes[a].cluster_size() for a in addresses] == [5] * 5
        await sim.nodes[addresses[4]].leave()
        sim.crash(addresses[4])
        await wait_for(
            lambda: all(sim.nodes[a].cluster_size() == 4 for a in addresses[:4]), step=SETTINGS.tick_interval
        )
        assert all(sim.nodes[a].cluster_size() == fresh_count(sim.nodes[a]) == 4 for a in addresses[:4])
        nursery.cancel_scope.cancel()


async def test_the_kept_count_survives_a_restore_from_the_store(autojump_clock):
    network = SimNetwork(seed=5)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        addresses = [f"10.0.5.{i}:7946" for i in range(1, 4)]
        await sim.start(addresses[0])
        for address in addresses[1:]:
            await sim.start(address, seeds=[addresses[0]])
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        await sim.nodes[addresses[2]].leave()
        await wait_for(lambda: sim.nodes[addresses[0]].cluster_size() == 2, step=SETTINGS.tick_interval)
        sim.crash(addresses[0])
        await trio.sleep(1.0)  # the cancelled node lets go of its address
        restarted = await sim.start(addresses[0], seeds=[addresses[1]])  # rebuilt from its store
        assert restarted.cluster_size() == fresh_count(restarted) == 2
        assert len(restarted.document.node_records()) == 3  # the left node's record is still there
        nursery.cancel_scope.cancel()
