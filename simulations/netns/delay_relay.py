"""A TCP relay that holds every byte back for a fixed delay, in both directions.

This kernel has no sch_netem, so a namespace host gets its delay here instead: an iptables
REDIRECT in the host's namespace sends every inbound TCP connection for the formd port to this
relay, which opens its own connection to formd on 127.0.0.1 and forwards each chunk `delay`
seconds after it arrived, keeping the order. Every connection a peer opens to the host crosses
it, so one-way delay on that connection is `delay` and a request and its reply take 2 x delay
longer. Memory stays bounded: a direction stops reading while it holds `window` bytes.

    python -m simulations.netns.delay_relay --port 17946 --to-port 7946 --delay-ms 50
"""

from __future__ import annotations

import argparse
import sys

import trio

CHUNK = 64 * 1024


async def pump(source: trio.SocketStream, sink: trio.SocketStream, delay: float, window: int) -> None:
    """source -> sink, each chunk sent `delay` after it arrived; EOF passed on after the rest."""
    held_in, held_out = trio.open_memory_channel[tuple[float, bytes]](max(1, window // CHUNK))

    async def receive() -> None:
        async with held_in:
            try:
                while data := await source.receive_some(CHUNK):
                    await held_in.send((trio.current_time() + delay, data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def send() -> None:
        try:
            async with held_out:
                async for due, data in held_out:
                    await trio.sleep_until(due)
                    await sink.send_all(data)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(send)


async def relay(
    port: int,
    to_port: int,
    delay: float,
    window: int,
    host: str = "0.0.0.0",
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on host:port (0: any free port, handed to task_status.started)."""

    async def handle(inbound: trio.SocketStream) -> None:
        try:
            outbound = await trio.open_tcp_stream("127.0.0.1", to_port)
        except OSError:
            await inbound.aclose()
            return
        try:
            async with inbound, outbound, trio.open_nursery() as nursery:
                nursery.start_soon(pump, inbound, outbound, delay, window)
                nursery.start_soon(pump, outbound, inbound, delay, window)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # one connection going wrong must not stop the relay

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def serve(port: int, to_port: int, delay: float, window: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(relay, port, to_port, delay, window)
        print("listening", flush=True)  # the harness waits for this line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.netns.delay_relay", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="where redirected connections arrive")
    parser.add_argument("--to-port", type=int, required=True, help="the local port they are relayed to")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--window", type=int, default=4 * 1024 * 1024, help="bytes held per direction")
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.port, args.to_port, args.delay_ms / 1000, args.window)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
