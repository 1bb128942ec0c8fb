"""Node.cluster_size() is cached on the document's nodes-map version (it is asked for on every
accepted update); the cached figure must follow joins and leaves like a fresh count does."""

import random

import trio

from test_daemon_node import SETTINGS, Sim, wait_for

from daemon.mem_transport import SimNetwork


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
        await wait_for(lambda: all(sim.nodes[a].cluster_size() == 4 for a in addresses[:4]), step=SETTINGS.tick_interval)
        assert all(sim.nodes[a].cluster_size() == fresh_count(sim.nodes[a]) == 4 for a in addresses[:4])
        nursery.cancel_scope.cancel()


async def test_the_cached_size_is_counted_again_after_the_nodes_map_changes(autojump_clock):
    network = SimNetwork(seed=5)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        a = await sim.start("10.0.5.1:7946")
        version = a.document.view_versions["nodes"]
        assert a.cluster_size() == 1
        b = await sim.start("10.0.5.2:7946", seeds=["10.0.5.1:7946"])
        await wait_for(lambda: a.cluster_size() == 2 and b.cluster_size() == 2)
        assert a.document.view_versions["nodes"] > version
        nursery.cancel_scope.cancel()
