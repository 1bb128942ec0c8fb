"""NetTransport over real TCP on 127.0.0.1: request/reply, one-way sends, and bad peers of every kind.

The fail_after guards only stop a broken build from hanging CI; nothing here asserts speed.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from contextlib import asynccontextmanager

import pytest
import trio
from tcp_frames import raw_frame

from daemon.transport.interface import TransportError
from daemon.transport.keyring import Keyring, generate_key
from daemon.transport.tcp import HELLO, REQUEST, SEND, NetTransport

GUARD = 20


class Drops:
    """on_drop callback that remembers reasons and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.reasons: list[tuple[str, str]] = []
        self._changed = trio.Event()

    def __call__(self, address: str, reason: str) -> None:
        self.reasons.append((address, reason))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(GUARD):
            while len(self.reasons) < count:
                await self._changed.wait()


class Inbox:
    """A handler that records what arrived and answers requests with b'echo:' + payload."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = trio.Event()

    async def __call__(self, sender: str, payload: bytes) -> bytes | None:
        self.items.append((sender, payload))
        self._changed.set()
        self._changed = trio.Event()
        if payload.startswith(b"boom"):
            raise RuntimeError("handler bug")
        if payload.startswith(b"silent"):
            return None
        if payload.startswith(b"slow"):
            await trio.sleep_forever()
        return b"echo:" + payload

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(GUARD):
            while len(self.items) < count:
                await self._changed.wait()


@asynccontextmanager
async def serving(keyring: Keyring, handler=None, **options):
    drops = Drops()
    transport = NetTransport(keyring, "127.0.0.1:0", on_drop=drops, **options)
    inbox = handler or Inbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve, inbox)
        transport.drops = drops
        transport.inbox = inbox
        try:
            yield transport
        finally:
            await transport.aclose()


def port_of(transport: NetTransport) -> int:
    return int(transport.local_address.rsplit(":", 1)[1])


async def assert_still_serving(server: NetTransport, keyring: Keyring) -> None:
    async with serving(keyring) as client:
        assert (
            await client.request(server.local_address, b"still there?", timeout=GUARD) == b"echo:still there?"
        )


async def test_request_reply_and_one_way_send():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(ring) as client:
        reply = await client.request(server.local_address, b"hello", timeout=GUARD)
        assert reply == b"echo:hello"
        assert await client.send(server.local_address, b"fire and forget") is True
        await server.inbox.wait_for(2)
        # the sender is named by its serving address, not its ephemeral port
        assert server.inbox.items == [
            (client.local_address, b"hello"),
            (client.local_address, b"fire and forget"),
        ]
        assert server.drops.reasons == [] and client.drops.reasons == []


async def test_many_concurrent_requests_share_one_connection():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(ring) as client:
        replies: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            replies[i] = await client.request(server.local_address, b"%d" % i, timeout=GUARD)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(ask, i)
        assert replies == {i: b"echo:%d" % i for i in range(50)}
        assert client.connections == (1, 0)
        assert server.connections == (0, 1)


async def test_byte_counters_agree():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(ring) as client:
        await client.request(server.local_address, b"x" * 1000, timeout=GUARD)
        assert client.bytes_sent > 1000 and server.bytes_received == client.bytes_sent
        assert server.bytes_sent == client.bytes_received > 1000


async def test_unreachable_peer_fails_requests_and_send_never_raises():
    ring = Keyring.generate()
    async with serving(ring) as gone:
        address = gone.local_address
    async with serving(ring) as client:
        with pytest.raises(TransportError, match="cannot connect"):
            await client.request(address, b"anyone?", timeout=GUARD)
        # True only means "queued": the connection attempt fails later, quietly
        assert await client.send(address, b"into the void") is True
        assert await client.send("not an address", b"x") is False
        with pytest.raises(TransportError, match="host:port"):
            await client.request("nohost", b"x", timeout=1)


async def test_request_timeout_no_reply_and_handler_failure():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(ring) as client:
        with pytest.raises(TransportError, match="no reply from .* within 0.2 s"):
            await client.request(server.local_address, b"slow", timeout=0.2)
        with pytest.raises(TransportError, match="did not answer: no reply"):
            await client.request(server.local_address, b"silent", timeout=GUARD)
        with pytest.raises(TransportError, match="handler failed: RuntimeError"):
            await client.request(server.local_address, b"boom", timeout=GUARD)
        # none of that is a bad frame, and the server still serves
        assert server.drops.reasons == []


async def test_reconnects_after_the_peer_restarts():
    ring = Keyring.generate()
    async with serving(ring) as client:
        async with serving(ring) as server:
            address = server.local_address
            assert await client.request(address, b"one", timeout=GUARD) == b"echo:one"
        restarted = NetTransport(ring, address)
        async with trio.open_nursery() as nursery:
            await nursery.start(restarted.serve, Inbox())
            # The old connection may still look open to the client; the first request
            # can fail on it, after which a fresh connection is made.
            for _ in range(3):
                try:
                    assert await client.request(address, b"two", timeout=GUARD) == b"echo:two"
                    break
                except TransportError:
                    continue
            else:
                pytest.fail("never reconnected")
            await restarted.aclose()


async def test_oversized_payloads_are_refused_by_the_sender():
    ring = Keyring.generate()
    async with serving(ring, max_frame=64 * 1024) as server, serving(ring, max_frame=64 * 1024) as client:
        assert await client.send(server.local_address, b"x" * 70_000) is False
        with pytest.raises(TransportError, match="over the frame limit"):
            await client.request(server.local_address, b"x" * 70_000, timeout=GUARD)
        assert (
            await client.request(server.local_address, b"x" * 60_000, timeout=GUARD)
            == b"echo:" + b"x" * 60_000
        )


# -- bad peers: each is dropped with one reason, nothing reaches the handler, serving goes on --


async def raw_connection(server: NetTransport) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port_of(server))


async def closed_by_server(stream: trio.SocketStream) -> bool:
    with trio.fail_after(GUARD):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


async def test_garbage_stream():
    ring = Keyring.generate()
    async with serving(ring) as server:
        stream = await raw_connection(server)
        await stream.send_all(b"\x00\x00\x01\x00" + os.urandom(256))
        await server.drops.wait_for(1)
        assert await closed_by_server(stream)
        assert server.drops.reasons[0][1] in ("authentication failed",) or server.drops.reasons[0][
            1
        ].startswith(("unknown key id", "unsupported frame version"))
        await assert_still_serving(server, ring)
        assert len(server.drops.reasons) == 1
        assert [p for _, p in server.inbox.items] == [b"still there?"]


async def test_oversized_length_prefix_is_refused_before_reading_the_body():
    ring = Keyring.generate()
    async with serving(ring) as server:
        stream = await raw_connection(server)
        await stream.send_all(struct.pack(">I", 9 * 1024 * 1024))  # and no body at all
        await server.drops.wait_for(1)
        assert server.drops.reasons[0][1] == "frame of 9 MiB over the 4 MiB limit"
        assert await closed_by_server(stream)
        await assert_still_serving(server, ring)
        assert server.inbox.items == [(server.inbox.items[0][0], b"still there?")]


async def test_truncated_frame():
    ring = Keyring.generate()
    async with serving(ring) as server:
        stream = await raw_connection(server)
        whole = raw_frame(ring, HELLO, b"127.0.0.1:1")
        await stream.send_all(whole[:30])
        await stream.aclose()
        await server.drops.wait_for(1)
        assert server.drops.reasons[0][1] == "truncated frame (connection closed after 30 bytes)"
        await assert_still_serving(server, ring)


async def test_peer_with_another_cluster_key_learns_and_injects_nothing():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(Keyring.generate()) as stranger:
        with pytest.raises(TransportError):
            await stranger.request(server.local_address, b"let me in", timeout=GUARD)
        assert await stranger.send(server.local_address, b"inject") is True
        await server.drops.wait_for(2)
        assert all(reason.startswith("unknown key id") for _, reason in server.drops.reasons)
        assert server.inbox.items == []
        await assert_still_serving(server, ring)


async def test_replayed_frames_are_refused():
    ring = Keyring.generate()
    async with serving(ring) as server:
        recorded = raw_frame(ring, HELLO, b"127.0.0.1:9") + raw_frame(ring, SEND, b"pay me once")
        first = await raw_connection(server)
        await first.send_all(recorded)
        await server.inbox.wait_for(1)
        second = await raw_connection(server)
        await second.send_all(recorded)  # an eavesdropper replays the whole recording
        await server.drops.wait_for(1)
        assert server.drops.reasons[0][1] == "replayed frame"
        assert await closed_by_server(second)
        assert server.inbox.items == [("127.0.0.1:9", b"pay me once")]
        await first.aclose()


async def test_stale_frame_and_missing_hello():
    ring = Keyring.generate()
    async with serving(ring) as server:
        stale = await raw_connection(server)
        await stale.send_all(raw_frame(ring, HELLO, b"127.0.0.1:9", now=time.time() - 412))
        await server.drops.wait_for(1)
        assert server.drops.reasons[0][1].startswith("stale timestamp 41")
        rude = await raw_connection(server)
        await rude.send_all(raw_frame(ring, REQUEST, b"no hello", request_id=1))
        await server.drops.wait_for(2)
        assert server.drops.reasons[1][1] == "expected hello, got frame kind 3"
        assert server.inbox.items == []
        await assert_still_serving(server, ring)


async def test_default_drop_log_line(caplog):
    ring = Keyring.generate()
    server = NetTransport(ring, "127.0.0.1:0")
    with caplog.at_level(logging.WARNING, logger="formd.transport"):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, Inbox())
            stream = await raw_connection(server)
            await stream.send_all(struct.pack(">I", 5))
            assert await closed_by_server(stream)
            await server.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "formd.transport"]
    assert len(lines) == 1
    assert (
        lines[0].startswith("bad frame dropped: truncated frame (5 bytes") and " from 127.0.0.1:" in lines[0]
    )
    assert server.dropped == 1


async def test_key_rotation_without_restart():
    old = generate_key()
    server_ring, client_ring = Keyring(old), Keyring(old)
    async with serving(server_ring) as server, serving(client_ring) as client:
        assert await client.request(server.local_address, b"a", timeout=GUARD) == b"echo:a"
        new = generate_key()
        server_ring.add(new)
        new_id = client_ring.add(new)
        client_ring.use(new_id)  # the client now seals under the new key
        assert await client.request(server.local_address, b"b", timeout=GUARD) == b"echo:b"
        server_ring.use(new_id)
        server_ring.remove(Keyring(old).primary_id)
        assert await client.request(server.local_address, b"c", timeout=GUARD) == b"echo:c"
        # a node still on the old key only is now a stranger
        async with serving(Keyring(old)) as laggard:
            with pytest.raises(TransportError):
                await laggard.request(server.local_address, b"d", timeout=GUARD)
        assert [p for _, p in server.inbox.items] == [b"a", b"b", b"c"]
        assert any(r.startswith("unknown key id") for _, r in server.drops.reasons)


async def test_aclose_fails_pending_requests_and_refuses_new_ones():
    ring = Keyring.generate()
    async with serving(ring) as server:
        client = NetTransport(ring, "127.0.0.1:0")
        outcome: list[str] = []

        async def ask() -> None:
            try:
                await client.request(server.local_address, b"slow", timeout=GUARD)
            except TransportError as exc:
                outcome.append(str(exc))

        async with trio.open_nursery() as nursery:
            await nursery.start(client.serve, Inbox())
            nursery.start_soon(ask)
            await server.inbox.wait_for(1)
            await client.aclose()
        assert outcome == ["transport closed"]
        assert await client.send(server.local_address, b"x") is False
        with pytest.raises(TransportError, match="not serving"):
            await client.request(server.local_address, b"x", timeout=1)


async def test_frames_queued_just_before_shutdown_still_go_out():
    """A leaving node queues its goodbye with send() and stops at once; the goodbye arrives.

    Big frames keep the writer busy, so most of them are still queued when the stop comes.
    """
    ring = Keyring.generate()
    big = 2 * 1024 * 1024
    async with serving(ring) as server:
        leaving = NetTransport(ring, "127.0.0.1:0")
        async with trio.open_nursery() as nursery:
            await nursery.start(leaving.serve, Inbox())
            await leaving.request(server.local_address, b"hello", timeout=GUARD)  # connection is up
            for i in range(8):
                assert await leaving.send(server.local_address, b"%d" % i + b"." * big) is True
            nursery.cancel_scope.cancel()  # what the daemon does on SIGTERM
        await server.inbox.wait_for(9)
        assert [p[:1] for _, p in server.inbox.items][1:] == [b"%d" % i for i in range(8)]
        assert server.drops.reasons == []


def reset(stream: trio.SocketStream) -> None:
    """Make the coming close an RST, like a peer killed with kill -9 mid-conversation."""
    import socket

    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_connection_reset_by_a_client_costs_only_that_connection():
    ring = Keyring.generate()
    async with serving(ring) as server:
        for cut in (None, 30):  # between frames, then in the middle of one
            stream = await raw_connection(server)
            hello = raw_frame(ring, HELLO, b"127.0.0.1:9") + raw_frame(ring, REQUEST, b"slow", request_id=1)
            await stream.send_all(hello if cut is None else hello[:cut])
            if cut is None:
                await server.inbox.wait_for(1)
            reset(stream)
            await stream.aclose()
        await server.drops.wait_for(1)
        assert server.drops.reasons[0][1] == "truncated frame (connection closed after 30 bytes)"
        await assert_still_serving(server, ring)


async def test_connection_reset_by_a_server_fails_the_request_not_the_client():
    ring = Keyring.generate()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def rude_server(stream: trio.SocketStream) -> None:
        await stream.receive_some(10)
        reset(stream)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, rude_server, listeners)
        async with serving(ring) as client, serving(ring) as server:
            for _ in range(3):
                with pytest.raises(TransportError):
                    await client.request(address, b"hello?", timeout=GUARD)
            assert await client.request(server.local_address, b"fine", timeout=GUARD) == b"echo:fine"
        nursery.cancel_scope.cancel()


async def test_idle_outbound_connections_are_retired_and_reopened_on_demand():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(ring, outbound_idle_timeout=0.2) as client:
        assert await client.request(server.local_address, b"one", timeout=GUARD) == b"echo:one"
        assert client.connections == (1, 0)
        with trio.fail_after(GUARD):
            while client.connections != (0, 0) or server.connections != (0, 0):
                await trio.sleep(0.05)
        assert await client.request(server.local_address, b"two", timeout=GUARD) == b"echo:two"
        assert server.drops.reasons == [] and client.drops.reasons == []


async def test_one_way_sends_of_a_connection_are_handled_in_arrival_order():
    # Each handler call yields to the scheduler, which runs ready tasks in a shuffled order:
    # handled one task per frame, these would come out of order (a writer's gossip pushes then
    # reach the document out of order and are refused as missing).
    ring = Keyring.generate()
    seen: list[bytes] = []

    async def yielding(sender: str, payload: bytes) -> bytes:
        for _ in range(int(payload) % 3 + 1):
            await trio.lowlevel.checkpoint()
        seen.append(payload)
        return b"ok"

    async with serving(ring, yielding) as server, serving(ring) as client:
        sent = [b"%d" % i for i in range(60)]
        for payload in sent:
            assert await client.send(server.local_address, payload) is True
        with trio.fail_after(GUARD):
            while len(seen) < len(sent):
                await trio.sleep(0.01)
        assert seen == sent


async def test_a_slow_one_way_send_does_not_hold_up_requests():
    ring = Keyring.generate()
    async with serving(ring) as server, serving(ring) as client:
        assert await client.send(server.local_address, b"slow send") is True
        await server.inbox.wait_for(1)
        assert await client.request(server.local_address, b"meanwhile", timeout=GUARD) == b"echo:meanwhile"
        assert client.connections == (1, 0)
