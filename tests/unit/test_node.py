"""The node driver over the simulated network under MockClock: the same code formd runs."""

import dataclasses

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sim_nodes import SETTINGS, Sim, running_cluster, wait_for

from crdt_state import sync
from daemon.cluster.gossip import BroadcastQueue, unpack_payload
from daemon.cluster.refutation import encode_notice
from daemon.transport.memory import SimNetwork


async def test_ten_nodes_converge_and_a_label_spreads(autojump_clock):
    async with running_cluster(0, 10, seed=3, latency=(0.001, 0.01)) as (sim, addresses):
        sim.nodes[addresses[7]].set_labels({"zone": "b"})
        start = trio.current_time()

        def seen():
            return all(
                n.document.node_records()[sim.nodes[addresses[7]].identity.node_id].capabilities["labels"]
                == {"zone": "b"}
                for n in sim.nodes.values()
            )

        await wait_for(seen, step=0.01)
        # Epidemic push: a few gossip rounds, far below the 10 s anti-entropy interval.
        assert trio.current_time() - start < 5 * SETTINGS.gossip_interval * 3


async def test_lossy_network_still_converges(autojump_clock):
    async with running_cluster(1, 8, seed=5, latency=(0.001, 0.05), loss=0.2) as (sim, addresses):
        sim.nodes[addresses[3]].set_labels({"k": "v"})
        target = sim.nodes[addresses[3]].identity.node_id
        await wait_for(
            lambda: all(
                n.document.node_records()[target].capabilities["labels"] == {"k": "v"}
                for n in sim.nodes.values()
            )
        )
        stats = sim.network.stats
        assert 0.1 < stats.lost / stats.sent < 0.3  # the network really lost about a fifth


async def test_crash_suspect_dead_then_restart_rejoins_with_its_document(autojump_clock):
    async with running_cluster(2, 4, seed=7) as (sim, addresses):
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
            # joined, then suspect and dead once; a record the victim wrote just before the
            # crash can arrive after a suspicion naming an older one: alive again, suspect again.
            seen = events(address)
            assert (
                seen[0] == "peer joined"
                and seen[-2:] == ["peer suspect", "peer dead"]
                and seen.count("peer dead") == 1
            )
            assert set(seen[1:-1]) <= {"peer suspect", "peer alive again"}

        node = await sim.start(victim, seeds=[addresses[0]])
        assert node.identity.node_id == old_id
        assert len(node.document.node_records()) == 4  # restored before any gossip
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        assert node.incarnation == 2
        await trio.sleep(3)  # a few more ticks: nobody refuses anything along the way
        for address in addresses:
            assert [f for m, f in sim.logs[address].lines if m.startswith("bad")] == []
            assert ("peer rejoined", {"id": old_id.hex()[:12], "addr": victim}) in sim.logs[
                address
            ].lines or address == victim


async def test_leave_is_seen_at_once(autojump_clock):
    async with running_cluster(3, 5, seed=9) as (sim, addresses):
        leaver = addresses[4]
        await sim.nodes[leaver].leave()
        sim.crash(leaver)
        waited = await wait_for(lambda: sim.everyone_sees(addresses[:4], [leaver], "left"), step=0.01)
        assert waited < SETTINGS.tick_interval  # not a timeout: the left record itself


# Client ids decide which of two concurrent writes of one key the CRDT shows. The victim's first
# life writes under EARLIER_LIFE_CLIENT; a fresh start above it wins the CRDT (its earlier life
# becomes history it never sees, only peers that held it can tell), one below it loses (the
# earlier life shows up in its own document).
EARLIER_LIFE_CLIENT = 1 << 31


@pytest.mark.parametrize(
    "fresh_client", [(1 << 32) - 5, 5], ids=["fresh-write-wins-the-crdt", "earlier-life-wins-the-crdt"]
)
async def test_restart_with_the_key_but_without_the_state_moves_past_its_earlier_life(
    autojump_clock, fresh_client
):
    network = SimNetwork(seed=11)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        addresses = [f"10.0.4.{i}:7946" for i in range(5)]
        victim = addresses[3]
        peers = [a for a in addresses if a != victim]
        await sim.start(addresses[0])
        for address in addresses[1:]:
            await sim.start(
                address, seeds=[addresses[0]], client_id=EARLIER_LIFE_CLIENT if address == victim else None
            )
        await wait_for(lambda: sim.everyone_sees(addresses, addresses))
        # An earlier life with a restart that kept its state (incarnation 2) and some heartbeats.
        sim.crash(victim)
        await trio.sleep(1)
        await sim.start(victim, seeds=[addresses[0]], client_id=EARLIER_LIFE_CLIENT + 1)
        earlier = sim.nodes[victim]
        await wait_for(lambda: earlier.heartbeat >= 10)  # record refreshes: every 5/3 s for 5 nodes
        assert earlier.incarnation == 2
        victim_id = earlier.identity.node_id
        sim.crash(victim)
        await wait_for(lambda: sim.everyone_sees(peers, [victim], "dead"))

        sim.lose_state(victim)
        node = await sim.start(victim, seeds=[addresses[0]], client_id=fresh_client)
        assert node.identity.node_id == victim_id
        start = trio.current_time()

        def shown_alive_past_the_earlier_life():
            return all(
                sim.nodes[p].document.node_records()[victim_id].incarnation > earlier.incarnation
                and sim.nodes[p].peer_status(victim_id) == "alive"
                for p in peers
            )

        await wait_for(shown_alive_past_the_earlier_life, step=0.01)
        # A few gossip rounds, not a heartbeat interval: it moved past at once.
        assert trio.current_time() - start < 4 * SETTINGS.gossip_interval
        assert node.incarnation == earlier.incarnation + 1
        assert sim.incarnations[victim] == node.incarnation  # stored: a later restart starts above it
        refutations = [f for m, f in sim.logs[victim].lines if m == "own record from an earlier life seen"]
        assert refutations == [{"incarnation": 2, "taking": 3}]

        shown = {p: sim.nodes[p].document.node_records()[victim_id].heartbeat for p in peers}
        # Later refreshes arrive (every 5/3 s for 5 nodes) and the old record does not come back.
        await wait_for(
            lambda: all(sim.nodes[p].document.node_records()[victim_id].heartbeat > shown[p] for p in peers)
        )
        for peer in peers:
            record = sim.nodes[peer].document.node_records()[victim_id]
            assert (record.incarnation, sim.nodes[peer].peer_status(victim_id)) == (node.incarnation, "alive")
        for address in addresses:
            assert [f for m, f in sim.logs[address].lines if m.startswith("bad")] == []
        assert node.incarnation == earlier.incarnation + 1  # one refutation, no ping-pong
        nursery.cancel_scope.cancel()


async def test_record_notices_move_a_node_past_only_its_own_newer_records(autojump_clock):
    """A notice carries a signed record; only a genuine record of the receiver that is newer
    than what it publishes changes anything. Bad notices are dropped with one line each."""
    network = SimNetwork(seed=13)
    async with trio.open_nursery() as nursery:
        sim = Sim(nursery, network)
        a, b = "10.0.5.1:7946", "10.0.5.2:7946"
        await sim.start(a)
        await sim.start(b, seeds=[a])
        await wait_for(lambda: sim.everyone_sees([a, b], [a, b]))
        sender, receiver = sim.nodes[a], sim.nodes[b]
        own = receiver.document.get("nodes", receiver.identity.node_hex).node
        others = receiver.document.get("nodes", sender.identity.node_hex)
        forged = dataclasses.replace(own, incarnation=50).seal(Ed25519PrivateKey.generate())
        for payload in (
            encode_notice(b"not a record"),  # refused
            encode_notice(forged),  # refused: not signed by the node it names
            encode_notice(others.envelope),  # a record of another node: not ours to refute
            encode_notice(own.seal(receiver.identity.private_key)),  # ours, but not newer
        ):
            await sender.transport.send(b, payload)
        await trio.sleep(0.5)
        assert receiver.incarnation == 1
        assert receiver.updates_refused == 2
        dropped = [f["reason"] for m, f in sim.logs[b].lines if m == "bad message dropped"]
        assert len(dropped) == 2 and all(reason.startswith("record notice") for reason in dropped)

        newer = dataclasses.replace(own, incarnation=7, heartbeat=3).seal(receiver.identity.private_key)
        await sender.transport.send(b, encode_notice(newer))
        await wait_for(lambda: receiver.incarnation == 8, step=0.01)
        assert sim.incarnations[b] == 8
        await wait_for(
            lambda: sender.document.node_records()[receiver.identity.node_id].incarnation == 8, step=0.01
        )
        assert sender.peer_status(receiver.identity.node_id) == "alive"
        nursery.cancel_scope.cancel()


async def test_a_push_taken_only_through_a_repair_is_still_passed_on(autojump_clock):
    """Every peer missed the writer's previous write, so each refuses its label change as
    missing and takes it through the repair exchange. Each must still push it on, as if it
    had accepted it: before, such nodes dropped out of the epidemic (at 50 nodes a third of
    the receivers of a change), and some nodes then saw the change seconds later."""
    async with running_cluster(11, 5, sim_seed=41, seed=41) as (sim, addresses):
        writer = sim.nodes[addresses[0]]
        writer.publish()
        writer.queue = BroadcastQueue()  # that write's push was lost everywhere
        pushed = {address: record_pushes(sim.nodes[address]) for address in addresses[1:]}
        writer.set_labels({"zone": "b"})
        change = last_write_as_pushed(sim, addresses[0])

        def seen():
            return all(
                n.document.node_records()[writer.identity.node_id].capabilities["labels"] == {"zone": "b"}
                for n in sim.nodes.values()
            )

        await wait_for(seen, step=0.01)
        await trio.sleep(2.0)  # the forwarders' gossip rounds
        assert writer.updates_refused == 0
        assert {address for address, sent in pushed.items() if any(change in m for _, m in sent)} == set(
            pushed
        )


def last_write_as_pushed(sim, address):
    """The node's last write as an encoded Update message (it pushes what it stores)."""
    return sync.encode(sync.Update(sim.stores[address].updates[-1]))


def record_pushes(node):
    """(peer, messages) of every one-way send the node makes from now on."""
    sent = []
    transport = node.transport
    original = transport.send

    async def send(peer, payload):
        sent.append((peer, unpack_payload(payload)))
        await original(peer, payload)

    transport.send = send
    return sent


async def test_a_nodes_own_heartbeat_goes_to_a_whole_fanout_of_peers(autojump_clock):
    """At 4 nodes a heartbeat-only write has one transmit: the writer used to hand it to one
    peer, which passed it to one more, so each peer missed about one heartbeat in three and
    could stay several refresh intervals behind. The writer now sends its own writes to a
    whole fanout (3 peers here) in its first round."""
    async with running_cluster(12, 4, sim_seed=43, seed=43) as (sim, addresses):
        writer = sim.nodes[addresses[0]]
        sent = record_pushes(writer)
        writer.publish()
        heartbeat = last_write_as_pushed(sim, addresses[0])
        await trio.sleep(2 * SETTINGS.gossip_interval)
        assert {peer for peer, messages in sent if heartbeat in messages} == set(addresses[1:])
