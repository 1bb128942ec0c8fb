"""The one Transport interface the node is written against (real: net_transport, simulated: mem_transport).

A transport moves opaque payloads between node addresses ("host:port"):

    send(address, payload)            one-way, best effort; True means "handed to the network"
                                      (not "delivered"); never raises on network faults
    request(address, payload, timeout) -> reply payload, or raises TransportError
    serve(handler, task_status=...)   runs the transport until cancelled; handler is called as
                                      await handler(sender_address, payload) for every payload
                                      that arrives; its return value is the reply when the payload
                                      came from request() (None means "no reply": the requester
                                      gets TransportError; a str is sent back as the
                                      failure's reason), and is ignored for send()
    aclose()                          stop serving, drop connections, fail pending requests
    fetch_stream(address, payload, piece, timeout, consume)
                                      a range of a file from the peer, over a connection of its
                                      own (daemon/transport/file_stream.py): consume(head, pieces)
                                      runs in a worker thread; TransportError where the transport
                                      or the peer does not stream (the simulated transport)
    serve_files(handler)              answer stream requests: await handler(sender, payload)
                                      -> FileRange or a str reason

sender_address is the address the sending node serves on (as it declared inside a sealed
frame), not the ephemeral port of its TCP connection, so replies to it can go by send().

Payloads that fail to arrive intact (garbage, wrong key, replay, oversized, truncated) never
reach the handler: the transport counts them in `dropped` and calls on_drop(address, reason)
once per dropped frame, by default one warning line "bad frame dropped: <why> from <addr>".
"""

from __future__ import annotations

import abc
import logging
import os
from typing import Any, Awaitable, Callable, Iterable

import trio

from daemon.transport.file_stream import FileRange

Handler = Callable[[str, bytes], Awaitable[bytes | str | None]]
FileHandler = Callable[[str, bytes], Awaitable[FileRange | str]]
StreamConsumer = Callable[[bytes, Iterable[memoryview]], Any]
DropCallback = Callable[[str, str], None]

log = logging.getLogger("formd.transport")


class TransportError(Exception):
    """A request got no reply: unreachable peer, timeout, lost connection, peer refused."""


class ReplyWaiter:
    """A request's pending reply: both transports match replies by request id into one of these."""

    __slots__ = ("event", "reply", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: bytes | None = None
        self.error: str | None = None

    def outcome(self, address: str, timeout: float) -> bytes:
        """The reply once the wait is over, or TransportError saying why there is none."""
        if self.error is not None:
            raise TransportError(self.error)
        if not self.event.is_set():
            raise TransportError(f"no reply from {address} within {timeout:g} s")
        assert self.reply is not None
        return self.reply


def log_drop(address: str, reason: str) -> None:
    log.warning("bad frame dropped: %s from %s", reason, address)


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); raises TransportError when malformed."""
    if not isinstance(address, str) or ":" not in address:
        raise TransportError(f"address {address!r} is not host:port")
    host, _, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise TransportError(f"address {address!r} is not host:port")
    return host, int(port_text)


def listen_failure(address: str, key: str, exc: OSError) -> OSError:
    """A bind error an operator can act on: the address, the formd.toml key that set it, why."""
    why = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else str(exc)
    return OSError(f"cannot listen on {address} ({key}): {why}")


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Transport(abc.ABC):
    """Counters are public so benchmarks and `form` can read them without asking."""

    local_address: str

    def __init__(self, on_drop: DropCallback | None = None) -> None:
        self.on_drop: DropCallback = on_drop or log_drop
        self.dropped = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def _drop(self, address: str, reason: str) -> None:
        self.dropped += 1
        self.on_drop(address, reason)

    @abc.abstractmethod
    async def send(self, address: str, payload: bytes) -> bool: ...

    @abc.abstractmethod
    async def request(self, address: str, payload: bytes, timeout: float) -> bytes: ...

    @abc.abstractmethod
    async def serve(self, handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def fetch_stream(
        self, address: str, payload: bytes, piece: int, timeout: float, consume: StreamConsumer
    ) -> Any:
        await trio.lowlevel.checkpoint()
        raise TransportError("this transport does not stream files")

    def serve_files(self, handler: FileHandler) -> None:
        """Streams are not served: requests for them fail, and fetchers ask chunk by chunk."""
