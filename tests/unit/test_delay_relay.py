"""The delay relay the namespace hosts use for delay (simulations/netns/delay_relay.py), on
127.0.0.1: bytes arrive whole and in order both ways, end of stream is passed on, and nothing
comes back sooner than the delay twice over (a lower bound, which no load can break)."""

import os

import trio

from simulations.netns.delay_relay import relay

DELAY = 0.05


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


async def test_the_relay_delays_both_ways_and_keeps_every_byte_in_order():
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        target = listeners[0].socket.getsockname()[1]
        port = await nursery.start(relay, 0, target, DELAY, 256 * 1024, "127.0.0.1")

        client = await trio.open_tcp_stream("127.0.0.1", port)
        began = trio.current_time()
        await client.send_all(b"ping")
        assert await client.receive_some(4) == b"ping"
        assert trio.current_time() - began >= 2 * DELAY

        received = bytearray()

        async def send_all_then_eof():
            await client.send_all(payload)
            await client.send_eof()

        nursery.start_soon(send_all_then_eof)
        while data := await client.receive_some(65536):
            received += data
        assert bytes(received) == payload  # and the echo's end of stream came through
        await client.aclose()
        nursery.cancel_scope.cancel()
