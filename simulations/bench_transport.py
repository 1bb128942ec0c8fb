"""Transport micro-benchmarks: prints figures, asserts nothing.

    python -m simulations.bench_transport [--seconds 1.0]

1. frames: seal + open per second (one core) at several payload sizes;
2. NetTransport on 127.0.0.1: request/reply round trips per second, one at a time and 32 in
   flight, and one-way send throughput;
3. MemTransport under MockClock: simulated messages delivered per real second (what bounds
   a 1000-node simulation).
"""

from __future__ import annotations

import argparse
import time

import trio
import trio.testing

from daemon.transport.frames import ReplayGuard, open_frame, seal
from daemon.transport.keyring import Keyring
from daemon.transport.memory import SimNetwork
from daemon.transport.tcp import NetTransport


def bench_frames(seconds: float) -> None:
    ring = Keyring.generate()
    print("frames (seal + open, one core)")
    for size in (100, 4096, 65536, 1 << 20):
        payload = b"x" * size
        guard = ReplayGuard(capacity=10_000_000)
        count = 0
        start = time.perf_counter()
        now = time.time()
        while time.perf_counter() - start < seconds:
            open_frame(ring, seal(ring, payload, now), now, guard)
            count += 1
        elapsed = time.perf_counter() - start
        print(
            f"  {size:>8} B payload: {count / elapsed:>10,.0f} frames/s  {count * size / elapsed / 1e6:>8.1f} MB/s"
        )


async def bare_trio_round_trips(seconds: float) -> float:
    """100-byte ping-pong over a plain trio TCP stream: what the machine gives at all."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        count, start = 0, trio.current_time()
        while trio.current_time() - start < seconds:
            await stream.send_all(b"x" * 100)
            got = 0
            while got < 100:
                got += len(await stream.receive_some(100 - got))
            count += 1
        rate = count / (trio.current_time() - start)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return rate


async def bench_net(seconds: float) -> None:
    ring = Keyring.generate()
    server, client = NetTransport(ring), NetTransport(ring)
    received = 0

    async def handler(sender: str, payload: bytes) -> bytes:
        nonlocal received
        received += 1
        return b"ok"

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, handler)
        await nursery.start(client.serve, handler)
        address = server.local_address
        print("NetTransport on 127.0.0.1")
        baseline = await bare_trio_round_trips(seconds)
        print(f"  baseline: bare trio TCP ping-pong:  {baseline:>10,.0f} round trips/s")

        count, start = 0, trio.current_time()
        while trio.current_time() - start < seconds:
            await client.request(address, b"x" * 100, timeout=5)
            count += 1
        rate = count / (trio.current_time() - start)
        print(
            f"  sequential request/reply (100 B):  {rate:>10,.0f} round trips/s ({rate / baseline:.0%} of baseline)"
        )

        count, start = 0, trio.current_time()

        async def worker() -> None:
            nonlocal count
            while trio.current_time() - start < seconds:
                await client.request(address, b"x" * 100, timeout=5)
                count += 1

        async with trio.open_nursery() as workers:
            for _ in range(32):
                workers.start_soon(worker)
        print(
            f"  32 in flight request/reply (100 B):{count / (trio.current_time() - start):>10,.0f} round trips/s"
        )

        payload = b"x" * 65536
        before, sent_before = received, client.bytes_sent
        start = trio.current_time()
        while trio.current_time() - start < seconds:
            if not await client.send(address, payload):
                await trio.sleep(0)  # queue full: let the writer catch up
        await client.request(address, b"fence", timeout=30)  # same connection: all earlier sends are in
        elapsed = trio.current_time() - start
        delivered = received - before - 1
        print(
            f"  one-way sends (64 KiB):            {delivered / elapsed:>10,.0f} msgs/s  "
            f"{delivered * len(payload) / elapsed / 1e6:.1f} MB/s  "
            f"(wire overhead {(client.bytes_sent - sent_before) / max(1, delivered * len(payload)) - 1:.2%})"
        )
        nursery.cancel_scope.cancel()


async def bench_mem(seconds: float) -> None:
    network = SimNetwork(seed=1, latency=(0.001, 0.020))
    nodes = [network.transport(f"10.0.{i // 256}.{i % 256}:7946") for i in range(1000)]

    async def handler(sender: str, payload: bytes) -> None:
        return None

    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.serve, handler)
        rng = network.random
        real_start, sim_start = time.perf_counter(), trio.current_time()
        while time.perf_counter() - real_start < seconds:
            for node in nodes:  # one gossip round: every node pushes to 3 random peers
                for peer in rng.sample(nodes, 3):
                    await node.send(peer.local_address, b"x" * 200)
            await trio.sleep(0.2)
        real = time.perf_counter() - real_start
        simulated = trio.current_time() - sim_start
        print("MemTransport, 1000 nodes, fanout 3 every 200 ms, MockClock")
        print(
            f"  {network.stats.delivered / real:>10,.0f} messages delivered per real second; "
            f"{simulated:.1f} s simulated in {real:.1f} s"
        )
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    bench_frames(args.seconds)
    trio.run(bench_net, args.seconds)
    trio.run(bench_mem, args.seconds * 3, clock=trio.testing.MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
