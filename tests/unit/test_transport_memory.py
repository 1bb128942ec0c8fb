"""MemTransport on a SimNetwork under MockClock: latency, loss, partitions, crashes, sealing.

Times asserted here are virtual (trio.current_time under the autojump clock), fully
determined by the seeded network; nothing measures real speed.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from daemon.transport.interface import TransportError
from daemon.transport.keyring import Keyring
from daemon.transport.memory import SimNetwork


class Node:
    def __init__(self, network: SimNetwork, address: str, **options) -> None:
        self.drops: list[tuple[str, str]] = []
        self.transport = network.transport(address, on_drop=lambda a, r: self.drops.append((a, r)), **options)
        self.received: list[tuple[str, bytes, float]] = []
        self.address = address

    async def handler(self, sender: str, payload: bytes) -> bytes | None:
        self.received.append((sender, payload, trio.current_time()))
        if payload == b"silent":
            return None
        if payload == b"boom":
            raise RuntimeError("bug")
        return b"re:" + payload


@asynccontextmanager
async def cluster(network: SimNetwork, count: int, **options):
    nodes = [Node(network, f"10.0.0.{i}:7946", **options) for i in range(1, count + 1)]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.transport.serve, node.handler)
        yield nodes
        for node in nodes:
            await node.transport.aclose()


async def test_request_reply_latency_is_within_the_configured_range(autojump_clock):
    network = SimNetwork(seed=1, latency=(0.010, 0.050))
    async with cluster(network, 2) as (a, b):
        for i in range(50):
            start = trio.current_time()
            assert await a.transport.request(b.address, b"%d" % i, timeout=5) == b"re:%d" % i
            elapsed = trio.current_time() - start
            # two hops, each rounded up to the network's 1 ms resolution
            assert 0.020 <= elapsed <= 0.100 + 2 * network.resolution + 1e-9
        assert {sender for sender, _, _ in b.received} == {a.address}
        assert network.stats.delivered == 100 and network.stats.lost == 0
        assert a.transport.bytes_sent == b.transport.bytes_received > 0


async def test_one_way_send_arrives_after_latency(autojump_clock):
    network = SimNetwork(seed=2, latency=(0.5, 0.5))
    async with cluster(network, 2) as (a, b):
        start = trio.current_time()
        assert await a.transport.send(b.address, b"hi") is True
        await trio.sleep(0.499)
        assert b.received == []
        await trio.sleep(0.002)
        assert [(s, p) for s, p, _ in b.received] == [(a.address, b"hi")]
        assert b.received[0][2] - start == pytest.approx(0.5, abs=network.resolution)


async def test_loss_rate_matches_the_configured_probability(autojump_clock):
    network = SimNetwork(seed=3, latency=(0.001, 0.002), loss=0.3)
    async with cluster(network, 2) as (a, b):
        for _ in range(2000):
            await a.transport.send(b.address, b"x")
        await trio.sleep(1)
        assert network.stats.sent == 2000
        assert network.stats.lost + len(b.received) == 2000
        assert 0.25 < network.stats.lost / 2000 < 0.35


async def test_lost_request_times_out(autojump_clock):
    network = SimNetwork(seed=4, loss=1.0)
    async with cluster(network, 2) as (a, b):
        start = trio.current_time()
        with pytest.raises(TransportError, match="no reply from 10.0.0.2:7946 within 3 s"):
            await a.transport.request(b.address, b"hello?", timeout=3)
        assert trio.current_time() - start == pytest.approx(3)


async def test_partition_blocks_across_groups_and_heals(autojump_clock):
    network = SimNetwork(seed=5)
    async with cluster(network, 4) as (a, b, c, d):
        network.partition({a.address, b.address}, {c.address})  # d is in the implicit rest group
        assert await a.transport.request(b.address, b"ab", timeout=1) == b"re:ab"
        for target in (c, d):
            with pytest.raises(TransportError):
                await a.transport.request(target.address, b"across", timeout=1)
        with pytest.raises(TransportError):
            await c.transport.request(d.address, b"c to rest", timeout=1)
        assert c.received == [] and d.received == []
        network.heal()
        assert await a.transport.request(c.address, b"healed", timeout=1) == b"re:healed"
        assert await c.transport.request(d.address, b"healed", timeout=1) == b"re:healed"
        with pytest.raises(ValueError, match="two partition groups"):
            network.partition({a.address}, {a.address})


async def test_partition_starting_mid_flight_loses_the_message(autojump_clock):
    network = SimNetwork(seed=6, latency=(1.0, 1.0))
    async with cluster(network, 2) as (a, b):
        await a.transport.send(b.address, b"in flight")
        await trio.sleep(0.5)
        network.partition({a.address}, {b.address})
        await trio.sleep(1)
        assert b.received == []
        assert network.stats.blocked == 1


async def test_crashed_node_neither_sends_nor_receives_until_restored(autojump_clock):
    network = SimNetwork(seed=7)
    async with cluster(network, 2) as (a, b):
        network.crash(b.address)
        with pytest.raises(TransportError, match="no reply"):
            await a.transport.request(b.address, b"are you there", timeout=2)
        assert await b.transport.send(a.address, b"ghost") is False
        await trio.sleep(1)
        assert a.received == [] and b.received == []
        network.restore(b.address)
        assert await a.transport.request(b.address, b"back?", timeout=2) == b"re:back?"


async def test_no_reply_and_handler_failure_reach_the_requester(autojump_clock):
    network = SimNetwork(seed=8)
    async with cluster(network, 2) as (a, b):
        with pytest.raises(TransportError, match="did not answer: no reply"):
            await a.transport.request(b.address, b"silent", timeout=2)
        with pytest.raises(TransportError, match="handler failed: RuntimeError"):
            await a.transport.request(b.address, b"boom", timeout=2)
        assert await a.transport.request(b.address, b"fine", timeout=2) == b"re:fine"


async def test_unknown_address_and_closed_transport(autojump_clock):
    network = SimNetwork(seed=9)
    async with cluster(network, 1) as (a,):
        assert await a.transport.send("10.9.9.9:1", b"nobody") is True  # handed to the network
        assert network.stats.blocked == 1
        with pytest.raises(ValueError, match="already in use"):
            network.transport(a.address)
    assert await a.transport.send("10.0.0.1:7946", b"x") is False
    with pytest.raises(TransportError, match="not serving"):
        await a.transport.request("10.0.0.1:7946", b"x", timeout=1)
    network.transport(a.address)  # a restarted node may take its old address again


async def test_sealed_network_drops_a_node_with_another_key(autojump_clock):
    network = SimNetwork(seed=10)
    ring = Keyring.generate()
    async with trio.open_nursery() as nursery:
        a = Node(network, "10.0.0.1:7946", keyring=ring)
        b = Node(network, "10.0.0.2:7946", keyring=ring)
        stranger = Node(network, "10.0.0.3:7946", keyring=Keyring.generate())
        plain = Node(network, "10.0.0.4:7946")
        for node in (a, b, stranger, plain):
            await nursery.start(node.transport.serve, node.handler)
        assert await a.transport.request(b.address, b"sealed", timeout=1) == b"re:sealed"
        with pytest.raises(TransportError):
            await stranger.transport.request(b.address, b"let me in", timeout=1)
        await plain.transport.send(b.address, b"plain")
        await trio.sleep(1)
        reasons = [reason for _, reason in b.drops]
        assert len(reasons) == 2
        assert reasons[0].startswith("unknown key id")
        assert reasons[1] == "unsealed message, this node requires sealed frames"
        assert [p for _, p, _ in b.received] == [b"sealed"]
        assert b.transport.dropped == 2
        nursery.cancel_scope.cancel()


async def test_hours_of_simulated_traffic_run_quickly(autojump_clock):
    network = SimNetwork(seed=11, latency=(0.001, 0.010), loss=0.01)
    async with cluster(network, 5) as nodes:
        answered = failed = 0
        rng = network.random
        end = trio.current_time() + 3600
        while trio.current_time() < end:
            source, target = rng.sample(nodes, 2)
            try:
                await source.transport.request(target.address, b"ping", timeout=1)
                answered += 1
            except TransportError:
                failed += 1
            await trio.sleep(1)
        assert answered + failed >= 3_000
        assert 0 < failed < answered * 0.05  # about 2% of round trips lose one of two messages


def test_exact_latencies_without_resolution_and_a_fresh_trio_run_per_use():
    network = SimNetwork(seed=12, latency=(0.0123, 0.0123), resolution=0)
    arrivals: list[float] = []

    async def one_run() -> None:
        async with cluster(network, 2) as (a, b):
            start = trio.current_time()
            await a.transport.send(b.address, b"x")
            await trio.sleep(1)
            arrivals.append(b.received[0][2] - start)
            await a.transport.aclose()
            await b.transport.aclose()

    for _ in range(2):  # the network's scheduler lives in one trio.run; a second run gets its own
        trio.run(one_run, clock=trio.testing.MockClock(autojump_threshold=0))
        network._transports.clear()
    assert arrivals == [pytest.approx(0.0123, abs=1e-9)] * 2


def test_same_seed_same_history():
    """The simulation's premise: a seeded network replays the same deliveries."""

    async def history(seed: int) -> list[tuple[str, bytes, float]]:
        network = SimNetwork(seed=seed, latency=(0.001, 0.050), loss=0.2)
        async with cluster(network, 4) as nodes:
            start = trio.current_time()
            for round_number in range(50):
                for node in nodes:
                    target = network.random.choice(nodes)
                    await node.transport.send(
                        target.address, b"%s %d" % (node.address.encode(), round_number)
                    )
                await trio.sleep(0.01)
            await trio.sleep(1)
            return sorted((n.address, p, round(t - start, 9)) for n in nodes for _, p, t in n.received)

    def run(seed: int):
        return trio.run(history, seed, clock=trio.testing.MockClock(autojump_threshold=0))

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    assert 100 < len(first) < 200  # 200 sent, about 20% lost
