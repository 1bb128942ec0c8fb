"""The real Transport: sealed frames over trio TCP streams.

On the wire every message is a 4-byte big-endian length followed by one sealed frame
(daemon/transport/frames.py). Inside the seal:

    kind (1 byte) | request id (8 bytes, 0 when unused) | body

    HELLO    first frame of every connection; body = the sender's serving address
    SEND     one-way payload
    REQUEST  payload that wants a REPLY (or FAILURE) with the same request id
    REPLY    the handler's answer
    FAILURE  the request was received but produced no answer (body = why)
    STREAM   the first request of a connection of its own: a range of a file, answered by
             one REPLY or FAILURE, then PIECE frames and END (daemon/transport/file_stream.py)

Connections: one outbound connection per peer address, opened lazily on the first message,
reused for every later one, reopened after a failure and closed after a minute unused. Requests and one-way sends travel
initiator -> acceptor; replies come back on the same connection. The acceptor runs at most
`handlers_per_connection` request handlers at once per connection, so a slow request does not
hold up the rest. One-way sends of a connection are handled one after another in the order
they arrived, by one task draining a queue of `handlers_per_connection` frames: a writer's
gossip pushes then reach the document in the order made (handled concurrently, trio's
scheduling would reorder them, and each update that overtook its predecessor would be refused
as missing). The acceptor stops reading while all request handlers are busy or the send queue
is full, so a peer that floods us is slowed down by TCP itself.
Outgoing frames wait in a bounded per-peer queue; send() drops (returns False) rather than
block when a peer cannot keep up, request() waits for room within its timeout. When the
transport stops (aclose() or cancellation of serve()), frames already queued on open
connections are still written for up to `linger` seconds, so a goodbye sent just before
shutdown is not lost; a frame is never cut in half on the wire.

Bad input never stops the server: a frame that is oversized (refused from its length
prefix, before the body is read), truncated, garbage, under an unknown key, tampered,
replayed or stale is dropped with one log line and its connection is closed, since a
stream that delivered one bad frame is not worth trusting for the next.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import time
from typing import Any, Awaitable, Callable

import outcome
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.transport.file_stream import (
    STREAM,
    TOKEN_BYTES,
    FileRange,
    PieceReceiver,
    holder_prelude,
    open_prelude,
    parse_stream_request,
    send_file_range,
    set_socket_timeout,
    stream_request,
)
from daemon.transport.frames import (
    MAX_FRAME,
    OVERHEAD,
    REPLAY_WINDOW,
    FrameError,
    ReplayGuard,
    check_frame_size,
    open_frame_view,
    seal_parts,
)
from daemon.transport.interface import (
    DropCallback,
    FileHandler,
    Handler,
    ReplyWaiter,
    StreamConsumer,
    Transport,
    TransportError,
    format_address,
    listen_failure,
    parse_address,
)
from daemon.transport.keyring import Keyring

log = logging.getLogger("formd.transport")

HELLO, SEND, REQUEST, REPLY, FAILURE = 1, 2, 3, 4, 5
_INNER = struct.Struct(">BQ")
_LENGTH = struct.Struct(">I")
_NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_DIRECT_RECEIVE = 256 * 1024  # frames larger than this are received into a buffer of their own


class _Closed(Exception):
    """The remote end closed the stream."""


class _Outbound:
    """One lazily opened, reused connection to a peer's serving address."""

    def __init__(self, address: str, queue_frames: int) -> None:
        self.address = address
        self.queue_in, self.queue_out = trio.open_memory_channel[tuple[int, int, bytes]](queue_frames)
        self.pending: dict[int, ReplyWaiter] = {}
        self.failure: str | None = None

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.queue_in.close()
        for waiter in self.pending.values():
            waiter.error = reason
            waiter.event.set()
        self.pending.clear()


class _InboundRequests:
    """What the request handlers of one inbound connection share: the stream their replies go
    out on, one writer at a time, and the bound on how many run at once."""

    def __init__(self, stream: trio.SocketStream, handlers: int) -> None:
        self.stream = stream
        self.write_lock = trio.Lock()
        self.in_flight = trio.Semaphore(handlers)


class _FrameReader:
    """Length-prefixed frames from a stream, counting bytes, refusing sizes before reading bodies."""

    def __init__(self, transport: "NetTransport", stream: trio.SocketStream) -> None:
        self._transport = transport
        self._stream = stream
        self._buffer = bytearray()

    @property
    def buffered(self) -> bytearray:
        """Bytes received past the last frame read (a stream's first pieces, say)."""
        return self._buffer

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                data = await self._stream.receive_some(max(size - len(self._buffer), 65536))
            except _NETWORK_ERRORS:
                data = b""  # reset by the peer: for us, the same as a close
            if not data:
                raise _Closed(len(self._buffer))
            self._transport.bytes_received += len(data)
            self._buffer += data

    async def _receive_into(self, frame: bytearray, filled: int) -> None:
        """Receive the rest of a large frame straight into its own buffer (no regrowing,
        no intermediate copies)."""
        view = memoryview(frame)
        while filled < len(frame):
            try:
                count = await self._stream.socket.recv_into(view[filled:])
            except _NETWORK_ERRORS:
                count = 0
            if not count:
                raise _Closed(_LENGTH.size + filled)
            self._transport.bytes_received += count
            filled += count

    async def read(self, idle_timeout: float, body_timeout: float) -> bytes | bytearray | None:
        """Next frame, None on a clean close between frames; FrameError for a bad one."""
        try:
            with trio.fail_after(idle_timeout):
                await self._fill(1)
        except _Closed:
            return None
        except trio.TooSlowError:
            return None  # idle: close quietly, the peer reconnects when it needs us
        try:
            with trio.fail_after(body_timeout):
                await self._fill(_LENGTH.size)
                (size,) = _LENGTH.unpack_from(self._buffer)
                check_frame_size(size, self._transport.max_frame)
                if size > _DIRECT_RECEIVE and len(self._buffer) <= _LENGTH.size + size:
                    frame = bytearray(size)
                    got = len(self._buffer) - _LENGTH.size
                    frame[:got] = memoryview(self._buffer)[_LENGTH.size :]
                    self._buffer.clear()
                    await self._receive_into(frame, got)
                    return frame
                await self._fill(_LENGTH.size + size)
        except _Closed as closed:
            raise FrameError(f"truncated frame (connection closed after {closed.args[0]} bytes)") from None
        except trio.TooSlowError:
            raise FrameError(f"truncated frame (nothing more for {body_timeout:g} s)") from None
        frame = bytes(self._buffer[_LENGTH.size : _LENGTH.size + size])
        del self._buffer[: _LENGTH.size + size]
        return frame


class NetTransport(Transport):
    """Serve on `listen` ("host:port", port 0 picks one); `advertise` is the address peers use.

    local_address is `advertise` when given, else the bound listen address (set once serve()
    has started). Every timing default suits a LAN; all are keyword arguments (seconds):
    connect_timeout, idle_timeout (an inbound connection with nothing to say is closed),
    outbound_idle_timeout (we close our own idle connections first, before the peer does),
    frame_timeout (a frame that started must finish), write_timeout (one frame's write),
    linger (flushing queued frames on stop; 0 disables).
    """

    def __init__(
        self,
        keyring: Keyring,
        listen: str = "127.0.0.1:0",
        *,
        advertise: str | None = None,
        on_drop: DropCallback | None = None,
        max_frame: int = MAX_FRAME,
        replay_window: float = REPLAY_WINDOW,
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
        queue_frames: int = 64,
        max_inbound: int = 1024,
        idle_timeout: float = 300.0,
        outbound_idle_timeout: float = 60.0,
        frame_timeout: float = 30.0,
        handlers_per_connection: int = 16,
        write_timeout: float = 10.0,
        linger: float = 1.0,
    ) -> None:
        super().__init__(on_drop)
        parse_address(listen)
        if advertise is not None:
            parse_address(advertise)
        self.keyring = keyring
        self.listen = listen
        self.local_address = advertise or listen
        self._advertise = advertise
        self.max_frame = max_frame
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.queue_frames = queue_frames
        self.max_inbound = max_inbound
        self.idle_timeout = idle_timeout
        self.outbound_idle_timeout = outbound_idle_timeout
        self.frame_timeout = frame_timeout
        self.handlers_per_connection = handlers_per_connection
        self.write_timeout = write_timeout
        self.linger = linger
        self._replay = ReplayGuard(window=replay_window)
        self._request_ids = itertools.count(1)
        self._outbound: dict[str, _Outbound] = {}
        self._inbound = 0
        self._nursery: trio.Nursery | None = None
        self._handler: Handler | None = None
        self._file_handler: FileHandler | None = None
        self._closed = False

    # -- public --------------------------------------------------------------------------

    @property
    def connections(self) -> tuple[int, int]:
        """(outbound, inbound) connections open now."""
        return len(self._outbound), self._inbound

    async def serve(self, handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._nursery is not None or self._closed:
            raise RuntimeError("a NetTransport serves once")
        host, port = parse_address(self.listen)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise listen_failure(self.listen, "listen", exc) from None
        bound_port = listeners[0].socket.getsockname()[1]
        self.local_address = self._advertise or format_address(host, bound_port)
        self._handler = handler
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(trio.serve_listeners, self._serve_inbound, listeners)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            for connection in list(self._outbound.values()):
                connection.fail("transport closed")
            self._outbound.clear()

    async def aclose(self) -> None:
        self._closed = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()

    async def send(self, address: str, payload: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        if not self._fits(payload):
            log.warning("not sending %d bytes to %s: over the frame limit", len(payload), address)
            return False
        try:
            connection = self._connection(address)
            connection.queue_in.send_nowait((SEND, 0, payload))
        except (TransportError, trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def request(self, address: str, payload: bytes, timeout: float) -> bytes:
        if not self._fits(payload):
            raise TransportError(f"request of {len(payload)} bytes is over the frame limit")
        connection = self._connection(address)
        request_id = next(self._request_ids)
        waiter = ReplyWaiter()
        connection.pending[request_id] = waiter
        try:
            with trio.move_on_after(timeout):
                try:
                    await connection.queue_in.send((REQUEST, request_id, payload))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    raise TransportError(connection.failure or f"connection to {address} closed") from None
                await waiter.event.wait()
        finally:
            connection.pending.pop(request_id, None)
        return waiter.outcome(address, timeout)

    def serve_files(self, handler: FileHandler) -> None:
        self._file_handler = handler

    async def fetch_stream(
        self, address: str, payload: bytes, piece: int, timeout: float, consume: StreamConsumer
    ) -> Any:
        """Ask `address` for a file stream and run consume(head, pieces) on it in a worker
        thread; its result, or TransportError when the stream cannot start or breaks.
        Cancelling shuts the socket, so the thread stops at its next read."""
        host, port = parse_address(address)
        token = os.urandom(TOKEN_BYTES)
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            raise TransportError(f"cannot connect to {address}: {exc or 'timed out'}") from None
        async with stream:
            try:
                await self._write(stream, HELLO, 0, self.local_address.encode())
                await self._write(stream, STREAM, 0, stream_request(token, piece, payload))
                reader = _FrameReader(self, stream)
                frame = await reader.read(timeout, timeout)
                if frame is None:
                    raise TransportError(f"{address} closed the connection instead of streaming")
                kind, _, head = self._open(frame)
            except FrameError as exc:
                raise TransportError(f"{address}: bad answer to a stream request: {exc}") from None
            except _NETWORK_ERRORS as exc:
                raise TransportError(f"stream from {address} failed: {exc}") from None
            if kind == FAILURE:
                raise TransportError(f"{address} did not stream: {head.decode('utf-8', 'replace')}")
            if kind != REPLY:
                raise TransportError(f"{address}: unexpected frame kind {kind} answering a stream request")
            try:
                cipher, head = open_prelude(self.keyring, token, head)
            except FrameError as exc:
                raise TransportError(f"{address}: {exc}") from None
            sock = socket.socket(fileno=os.dup(stream.socket.fileno()))
            receiver = PieceReceiver(sock, cipher, piece, bytes(reader.buffered))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_shut_down_when_cancelled, sock)
                    try:
                        result = await outcome.acapture(
                            trio.to_thread.run_sync, _consume, sock, timeout, consume, head, receiver, address
                        )
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                self.bytes_received += receiver.received
                sock.close()
            return result.unwrap()  # the consumer's own error as itself, not in a group

    # -- internals -----------------------------------------------------------------------

    def _fits(self, payload: bytes) -> bool:
        return OVERHEAD + _INNER.size + len(payload) <= self.max_frame

    def _connection(self, address: str) -> _Outbound:
        if self._closed or self._nursery is None:
            raise TransportError("transport is not serving")
        connection = self._outbound.get(address)
        if connection is None:
            host, port = parse_address(address)
            connection = _Outbound(address, self.queue_frames)
            self._outbound[address] = connection
            self._nursery.start_soon(self._run_outbound, connection, host, port)
        return connection

    def _seal(self, kind: int, request_id: int, body: bytes) -> bytearray:
        """The length prefix and sealed frame in one buffer (the body is copied once)."""
        data = seal_parts(
            self.keyring,
            (_INNER.pack(kind, request_id), body),
            self.clock(),
            max_frame=self.max_frame,
            room=_LENGTH.size,
        )
        _LENGTH.pack_into(data, 0, len(data) - _LENGTH.size)
        return data

    async def _write(self, stream: trio.SocketStream, kind: int, request_id: int, body: bytes) -> None:
        """Write one whole frame. A frame cut in two by a cancel would be garbage to the peer
        (and a "bad frame" line in its log), so the write is shielded, bounded by write_timeout;
        a write that cannot finish in time breaks the connection instead."""
        data = self._seal(kind, request_id, body)
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.write_timeout
            await stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.BrokenResourceError(f"write of {len(data)} bytes timed out")
        self.bytes_sent += len(data)

    def _open(self, frame: bytes | bytearray) -> tuple[int, int, bytes]:
        inner = open_frame_view(self.keyring, frame, self.clock(), self._replay, max_frame=self.max_frame)
        if len(inner) < _INNER.size:
            raise FrameError("sealed frame too short for its kind and request id")
        kind, request_id = _INNER.unpack_from(inner)
        return kind, request_id, bytes(inner[_INNER.size :])

    async def _run_outbound(self, connection: _Outbound, host: str, port: int) -> None:
        reason = f"connection to {connection.address} lost"
        try:
            try:
                with trio.fail_after(self.connect_timeout):
                    stream = await trio.open_tcp_stream(host, port)
            except (OSError, trio.TooSlowError) as exc:
                reason = f"cannot connect to {connection.address}: {exc or 'timed out'}"
                return
            async with stream:
                await self._write(stream, HELLO, 0, self.local_address.encode())
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._outbound_writer, stream, connection, nursery.cancel_scope)
                    await self._outbound_reader(stream, connection)
                    nursery.cancel_scope.cancel()
        except _NETWORK_ERRORS as exc:
            reason = f"connection to {connection.address} failed: {exc}"
        except Exception as exc:  # a bug here must cost one connection, not the transport
            log.exception("outbound connection to %s failed", connection.address)
            reason = f"connection to {connection.address} failed: {type(exc).__name__}"
        finally:
            if self._outbound.get(connection.address) is connection:
                del self._outbound[connection.address]
            connection.fail("transport closed" if self._closed else reason)

    def _retire(self, connection: _Outbound) -> None:
        if self._outbound.get(connection.address) is connection:
            del self._outbound[connection.address]
        connection.queue_in.close()

    async def _outbound_writer(
        self, stream: trio.SocketStream, connection: _Outbound, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                with trio.move_on_after(self.outbound_idle_timeout) as idle:
                    kind, request_id, body = await connection.queue_out.receive()
                if not idle.cancelled_caught:
                    await self._write(stream, kind, request_id, body)
                elif not connection.pending:
                    # Idle: retire it (later messages open a fresh one), so a node that has
                    # talked to many peers does not keep a socket open to each of them.
                    self._retire(connection)
        except (trio.EndOfChannel, *_NETWORK_ERRORS):
            pass
        finally:
            # When the transport stops, what is already queued still goes out (within `linger`):
            # a leaving node's goodbye is queued by send() just before the daemon shuts down.
            with trio.CancelScope(shield=True) as flush:
                flush.deadline = trio.current_time() + self.linger
                try:
                    while self.linger > 0:
                        await self._write(stream, *connection.queue_out.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, *_NETWORK_ERRORS):
                    pass
        scope.cancel()

    async def _outbound_reader(self, stream: trio.SocketStream, connection: _Outbound) -> None:
        reader = _FrameReader(self, stream)
        while True:
            try:
                frame = await reader.read(float("inf"), self.frame_timeout)
                if frame is None:
                    return
                kind, request_id, body = self._open(frame)
                if kind not in (REPLY, FAILURE):
                    raise FrameError(f"unexpected frame kind {kind} on a reply stream")
            except FrameError as exc:
                self._drop(connection.address, str(exc))
                return
            waiter = connection.pending.get(request_id)
            if waiter is None:
                continue  # the request already timed out
            if kind == REPLY:
                waiter.reply = body
            else:
                waiter.error = f"{connection.address} did not answer: {body.decode('utf-8', 'replace')}"
            waiter.event.set()

    async def _serve_inbound(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            remote = format_address(host, port)
        except OSError:
            remote = "unknown peer"
        if self._inbound >= self.max_inbound:
            log.warning("refusing connection from %s: %d connections already open", remote, self._inbound)
            await stream.aclose()
            return
        self._inbound += 1
        try:
            async with stream:
                await self._inbound_frames(stream, remote)
        except _NETWORK_ERRORS:
            pass  # the peer went away; nothing to answer
        except Exception:  # a bug here must cost one connection, not the listener
            log.exception("inbound connection from %s failed", remote)
        finally:
            self._inbound -= 1

    async def _inbound_frames(self, stream: trio.SocketStream, remote: str) -> None:
        requests = _InboundRequests(stream, self.handlers_per_connection)
        sends_in, sends_out = trio.open_memory_channel[tuple[str, bytes]](self.handlers_per_connection)
        async with trio.open_nursery() as handlers:
            handlers.start_soon(self._handle_sends_in_order, sends_out)
            async with sends_in:  # closed on return: what is queued is still handled, then the task ends
                await self._read_inbound(_FrameReader(self, stream), remote, handlers, requests, sends_in)

    async def _read_inbound(
        self,
        reader: _FrameReader,
        remote: str,
        handlers: trio.Nursery,
        requests: "_InboundRequests",
        sends_in: trio.MemorySendChannel,
    ) -> None:
        sender: str | None = None
        requests_seen = 0
        while True:
            # Back-pressure: no more reading while this peer has enough requests in progress
            # (a full send queue blocks below, with the same effect).
            await requests.in_flight.acquire()
            requests.in_flight.release()
            try:
                frame = await reader.read(
                    self.idle_timeout if sender else self.frame_timeout, self.frame_timeout
                )
                if frame is None:
                    return  # a clean close: let handlers already running finish
                kind, request_id, body = self._open(frame)
                if sender is None:
                    if kind != HELLO:
                        raise FrameError(f"expected hello, got frame kind {kind}")
                    sender = body.decode("utf-8", "replace")
                    parse_address(sender)
                    continue
                if kind not in (SEND, REQUEST, STREAM):
                    raise FrameError(f"unexpected frame kind {kind} on a request stream")
                requests_seen += 1
                if kind == STREAM:
                    if requests_seen > 1:
                        raise FrameError("a stream request must come first on its connection")
                    token, piece, payload = parse_stream_request(body)
            except (FrameError, TransportError) as exc:
                self._drop(remote if sender is None else f"{sender} (via {remote})", str(exc))
                handlers.cancel_scope.cancel()
                return
            if kind == STREAM:
                await self._serve_file_stream(requests.stream, sender, token, piece, payload)
                return  # the connection ends with its stream
            if kind == SEND:
                await sends_in.send((sender, body))
            else:
                await requests.in_flight.acquire()
                handlers.start_soon(self._handle_request, requests, sender, request_id, body)

    async def _serve_file_stream(
        self, stream: trio.SocketStream, sender: str, token: bytes, piece: int, payload: bytes
    ) -> None:
        source = await self._call_file_handler(sender, payload)
        if isinstance(source, str):
            await self._write(stream, FAILURE, 0, source.encode())
            return
        try:
            prelude, cipher = holder_prelude(self.keyring, token)
            await self._write(stream, REPLY, 0, prelude + source.head)
            sock = socket.socket(fileno=os.dup(stream.socket.fileno()))
        except BaseException:
            os.close(source.fd)
            raise
        try:
            async with trio.open_nursery() as nursery:
                # Cancelled (formd stopping): the socket shuts, so the thread's next write fails.
                nursery.start_soon(_shut_down_when_cancelled, sock)
                try:
                    self.bytes_sent += await trio.to_thread.run_sync(
                        self._send_range, sock, cipher, source, piece, sender
                    )
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            sock.close()
            os.close(source.fd)

    def _send_range(
        self, sock: socket.socket, cipher: AESGCM, source: FileRange, piece: int, sender: str
    ) -> int:
        try:
            set_socket_timeout(sock, self.write_timeout)
            return send_file_range(sock, cipher, source, min(piece, self.max_frame))
        except (OSError, EOFError) as exc:
            log.info("file stream to %s stopped: %s", sender, exc)
            return 0

    async def _call_file_handler(self, sender: str, payload: bytes) -> FileRange | str:
        if self._file_handler is None:
            return "files are not streamed here"
        return await _guarded(self._file_handler, sender, payload)

    async def _handle_sends_in_order(self, sends_out: trio.MemoryReceiveChannel) -> None:
        async with sends_out:
            async for sender, body in sends_out:
                await self._call_handler(sender, body)  # one-way: the reply is dropped

    async def _handle_request(
        self, requests: "_InboundRequests", sender: str, request_id: int, body: bytes
    ) -> None:
        try:
            reply = await self._call_handler(sender, body)
            if reply is None:
                kind, body = FAILURE, b"no reply"
            elif isinstance(reply, str):  # a handler's own error text
                kind, body = FAILURE, reply.encode()
            elif not self._fits(reply):
                kind, body = FAILURE, b"reply over the frame limit"
            else:
                kind, body = REPLY, reply
            async with requests.write_lock:
                await self._write(requests.stream, kind, request_id, body)
        except _NETWORK_ERRORS:
            pass  # the requester went away; its request fails on its side
        finally:
            requests.in_flight.release()

    async def _call_handler(self, sender: str, body: bytes) -> bytes | str | None:
        assert self._handler is not None
        return await _guarded(self._handler, sender, body)


async def _guarded(handler: Callable[[str, bytes], Awaitable[Any]], sender: str, body: bytes) -> Any:
    """The handler's answer, or the reason it failed: a handler bug must not take the
    listener down."""
    try:
        return await handler(sender, body)
    except Exception as exc:
        log.exception("transport handler failed on a message from %s", sender)
        return f"handler failed: {type(exc).__name__}"


def _consume(
    sock: socket.socket,
    timeout: float,
    consume: StreamConsumer,
    head: bytes,
    receiver: PieceReceiver,
    address: str,
) -> Any:
    """The fetching side of a stream, in a worker thread: the socket turns blocking (its
    trio stream is not used again) and consume reads the pieces."""
    try:
        set_socket_timeout(sock, timeout)
        return consume(head, receiver)
    except FrameError as exc:
        raise TransportError(f"stream from {address} broke: {exc}") from None
    except OSError as exc:
        raise TransportError(f"stream from {address} failed: {exc}") from None


async def _shut_down_when_cancelled(sock: socket.socket) -> None:
    try:
        await trio.sleep_forever()
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer
