"""The simulated Transport: many nodes in one process on a seeded, lossy, partitionable network.

Everything runs on trio time (trio.sleep for latency, trio.current_time for frame
timestamps), so under trio.testing.MockClock(autojump_threshold=0) hours of cluster life
take seconds. The same node code runs over this and over NetTransport.

    network = SimNetwork(seed=7, latency=(0.001, 0.020), loss=0.01)
    a = network.transport("10.0.0.1:7946")
    b = network.transport("10.0.0.2:7946")
    await nursery.start(a.serve, handler_a); await nursery.start(b.serve, handler_b)
    network.partition({"10.0.0.1:7946"}, {"10.0.0.2:7946"})   # ... later: network.heal()
    network.crash("10.0.0.2:7946")                              # ... later: network.restore(...)

Model (cheap on purpose: the simulation runs 1000 nodes):
- each message (send, request, reply) is delivered after a latency drawn uniformly from
  `latency` (or from a callable given the network's Random), rounded up to `resolution`
  (default 1 ms; 0 keeps exact draws); it is lost with probability `loss`, decided when it is
  sent. One scheduler (a trio system task per trio.run) holds every message in flight in a
  heap and wakes once per due time, delivering all that is due: a reply just wakes its
  requester, a send or request starts one handler task in the receiver's nursery. Messages
  due at the same time are delivered in the order they were sent;
- a message is also lost when, at send or at delivery time, the two ends are in different
  partitions, either end is crashed, or the receiver is not serving;
- partition(*groups): addresses in different groups cannot reach each other; every address
  not named in any group belongs to one more, implicit group; heal() removes partitions;
- crash(address): the node neither sends nor receives until restore(address); its pending
  requests simply time out, like a real peer's would;
- sealing is off by default; give a transport a Keyring and it seals every message into a
  real frame, and refuses (drop + on_drop) what it cannot open, so simulations can include
  nodes with the wrong cluster key.
The network's Random is seeded; trio's own task scheduling adds a little nondeterminism.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import struct
from dataclasses import dataclass
from typing import Callable, Iterable

import trio

from daemon.transport.frames import (
    MAX_FRAME,
    OVERHEAD,
    REPLAY_WINDOW,
    FrameError,
    ReplayGuard,
    open_frame,
    seal,
)
from daemon.transport.interface import DropCallback, Handler, ReplyWaiter, Transport, TransportError
from daemon.transport.keyring import Keyring

log = logging.getLogger("formd.transport")

SEND, REQUEST, REPLY, FAILURE = 2, 3, 4, 5
_INNER = struct.Struct(">BQ")
Latency = tuple[float, float] | Callable[[random.Random], float]


@dataclass
class NetworkStats:
    sent: int = 0  # messages handed to the network
    delivered: int = 0  # messages that reached a serving receiver
    lost: int = 0  # dropped by random loss
    blocked: int = 0  # dropped by a partition, a crash, or nobody serving there
    bytes: int = 0


class SimNetwork:
    def __init__(
        self,
        seed: int = 0,
        latency: Latency = (0.001, 0.005),
        loss: float = 0.0,
        *,
        max_frame: int = MAX_FRAME,
        resolution: float = 0.001,
    ) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss is a probability between 0 and 1")
        if isinstance(latency, tuple) and not 0 <= latency[0] <= latency[1]:
            raise ValueError("latency is a (low, high) range of seconds with 0 <= low <= high")
        self.random = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.max_frame = max_frame
        self.stats = NetworkStats()
        self.resolution = resolution
        self._transports: dict[str, MemTransport] = {}
        self._group: dict[str, int] = {}
        self._cut: set[frozenset[str]] = set()
        self._crashed: set[str] = set()
        self._due: list[tuple] = []  # heap of (due, sequence, receiver, sender, data, size)
        self._sequence = itertools.count()
        self._scheduler_token: object | None = None
        self._waiting_until = math.inf
        self._wake = trio.Event()

    # -- nodes ---------------------------------------------------------------------------

    def transport(
        self, address: str, *, keyring: Keyring | None = None, on_drop: DropCallback | None = None
    ) -> "MemTransport":
        existing = self._transports.get(address)
        if existing is not None and not existing.closed:
            raise ValueError(f"address {address} is already in use on this network")
        transport = MemTransport(self, address, keyring=keyring, on_drop=on_drop)
        self._transports[address] = transport
        return transport

    def addresses(self) -> list[str]:
        return list(self._transports)

    # -- faults --------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network; replaces any earlier partition."""
        group_of: dict[str, int] = {}
        for number, group in enumerate(groups, start=1):
            for address in group:
                if address in group_of:
                    raise ValueError(f"{address} is in two partition groups")
                group_of[address] = number
        self._group = group_of

    def cut(self, a: str, b: str) -> None:
        """Break the one link between a and b, both ways; each still reaches every other node
        (a firewall between two hosts, which a partition into groups cannot express)."""
        self._cut.add(frozenset((a, b)))

    def heal(self) -> None:
        """Undo partitions and cut links."""
        self._group = {}
        self._cut = set()

    def crash(self, address: str) -> None:
        self._crashed.add(address)

    def restore(self, address: str) -> None:
        self._crashed.discard(address)

    def is_crashed(self, address: str) -> bool:
        return address in self._crashed

    def can_reach(self, source: str, target: str) -> bool:
        if source in self._crashed or target in self._crashed:
            return False
        if self._cut and frozenset((source, target)) in self._cut:
            return False
        return self._group.get(source, 0) == self._group.get(target, 0)

    # -- delivery ------------------------------------------------------------------------

    def _draw_latency(self) -> float:
        if callable(self.latency):
            return max(0.0, self.latency(self.random))
        low, high = self.latency
        return low if low == high else self.random.uniform(low, high)

    def _dispatch(
        self, source: "MemTransport", target: str, kind: int, request_id: int, payload: bytes
    ) -> None:
        data: bytes | tuple[int, int, bytes]
        if source.keyring is not None:
            data = seal(
                source.keyring,
                _INNER.pack(kind, request_id) + payload,
                trio.current_time(),
                max_frame=self.max_frame,
            )
            size = len(data)
        else:
            data = (kind, request_id, payload)
            size = len(payload) + _INNER.size
        stats = self.stats
        stats.sent += 1
        stats.bytes += size
        source.bytes_sent += size
        receiver = self._transports.get(target)
        if receiver is None or receiver._nursery is None or not self.can_reach(source.local_address, target):
            stats.blocked += 1
            return
        if self.loss and self.random.random() < self.loss:
            stats.lost += 1
            return
        now = trio.current_time()
        due = now + self._draw_latency()
        if self.resolution > 0:
            due = math.ceil(due / self.resolution) * self.resolution
        self._ensure_scheduler()
        heapq.heappush(self._due, (due, next(self._sequence), receiver, source.local_address, data, size))
        if due < self._waiting_until:
            self._wake.set()

    # -- the scheduler: one system task delivers every message --------------------------------

    def _ensure_scheduler(self) -> None:
        token = trio.lowlevel.current_trio_token()
        if self._scheduler_token is not token:  # first use, or a new trio.run
            self._scheduler_token = token
            self._due = []
            self._waiting_until = math.inf
            self._wake = trio.Event()
            trio.lowlevel.spawn_system_task(self._deliver_loop, name="SimNetwork delivery")

    async def _deliver_loop(self) -> None:
        """Sleep until the earliest due message, then deliver everything due by then.

        One wake-up per distinct due time (latencies are rounded up to `resolution`, so
        busy networks deliver in batches), instead of one sleeping task per message.
        """
        due = self._due
        while True:
            if not due or due[0][0] > trio.current_time():
                self._waiting_until = due[0][0] if due else math.inf
                self._wake = trio.Event()
                with trio.move_on_at(self._waiting_until):
                    await self._wake.wait()
                self._waiting_until = -math.inf  # delivering: new messages need no wake-up
                continue
            now = trio.current_time()
            while due and due[0][0] <= now:
                _, _, receiver, sender, data, size = heapq.heappop(due)
                try:
                    receiver._arrive(sender, data, size)
                except Exception:  # a bug must not stop every node's deliveries
                    log.exception("simulated delivery to %s failed", receiver.local_address)


class MemTransport(Transport):
    def __init__(
        self,
        network: SimNetwork,
        address: str,
        *,
        keyring: Keyring | None = None,
        on_drop: DropCallback | None = None,
    ) -> None:
        super().__init__(on_drop)
        self.network = network
        self.local_address = address
        self.keyring = keyring
        self._replay = ReplayGuard(window=REPLAY_WINDOW) if keyring is not None else None
        self._request_ids = itertools.count(1)
        self._pending: dict[int, ReplyWaiter] = {}
        self._nursery: trio.Nursery | None = None
        self._handler: Handler | None = None
        self.closed = False

    def _fits(self, payload: bytes) -> bool:
        return OVERHEAD + _INNER.size + len(payload) <= self.network.max_frame

    def _can_send(self) -> bool:
        return self._nursery is not None and not self.network.is_crashed(self.local_address)

    async def send(self, address: str, payload: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        if not self._can_send() or not self._fits(payload):
            return False
        self.network._dispatch(self, address, SEND, 0, payload)
        return True

    async def request(self, address: str, payload: bytes, timeout: float) -> bytes:
        if self._nursery is None:
            raise TransportError("transport is not serving")
        if not self._fits(payload):
            raise TransportError(f"request of {len(payload)} bytes is over the frame limit")
        request_id = next(self._request_ids)
        waiter = ReplyWaiter()
        self._pending[request_id] = waiter
        try:
            if self._can_send():
                self.network._dispatch(self, address, REQUEST, request_id, payload)
            with trio.move_on_after(timeout):
                await waiter.event.wait()
        finally:
            self._pending.pop(request_id, None)
        return waiter.outcome(address, timeout)

    async def serve(self, handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._nursery is not None or self.closed:
            raise RuntimeError("a MemTransport serves once")
        self._handler = handler
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._shut()

    async def aclose(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._shut()
        await trio.lowlevel.checkpoint()

    def _shut(self) -> None:
        self.closed = True
        self._nursery = None
        for waiter in self._pending.values():
            waiter.error = "transport closed"
            waiter.event.set()
        self._pending.clear()

    def _arrive(self, sender: str, data: bytes | tuple[int, int, bytes], size: int) -> None:
        """Called by the network's scheduler when a message is due; never blocks."""
        network = self.network
        if self._nursery is None or not network.can_reach(sender, self.local_address):
            network.stats.blocked += 1
            return
        network.stats.delivered += 1
        self.bytes_received += size
        try:
            kind, request_id, payload = self._unwrap(data)
        except FrameError as exc:
            self._drop(sender, str(exc))
            return
        if kind in (REPLY, FAILURE):
            waiter = self._pending.get(request_id)
            if waiter is not None:
                if kind == REPLY:
                    waiter.reply = payload
                else:
                    waiter.error = f"{sender} did not answer: {payload.decode('utf-8', 'replace')}"
                waiter.event.set()
            return
        self._nursery.start_soon(self._handle, sender, kind, request_id, payload)

    async def _handle(self, sender: str, kind: int, request_id: int, payload: bytes) -> None:
        assert self._handler is not None
        try:
            reply = await self._handler(sender, payload)
        except Exception as exc:  # a handler bug must not stop the simulated node
            log.exception("transport handler failed on a message from %s", sender)
            reply = f"handler failed: {type(exc).__name__}"
        if kind != REQUEST or not self._can_send():
            return
        network = self.network
        if reply is None:
            network._dispatch(self, sender, FAILURE, request_id, b"no reply")
        elif isinstance(reply, str):
            network._dispatch(self, sender, FAILURE, request_id, reply.encode())
        elif not self._fits(reply):
            network._dispatch(self, sender, FAILURE, request_id, b"reply over the frame limit")
        else:
            network._dispatch(self, sender, REPLY, request_id, reply)

    def _unwrap(self, data: bytes | tuple[int, int, bytes]) -> tuple[int, int, bytes]:
        if isinstance(data, tuple):
            if self.keyring is not None:
                raise FrameError("unsealed message, this node requires sealed frames")
            return data
        if self.keyring is None or self._replay is None:
            raise FrameError("sealed frame, this node has no keyring")
        inner = open_frame(
            self.keyring, data, trio.current_time(), self._replay, max_frame=self.network.max_frame
        )
        if len(inner) < _INNER.size:
            raise FrameError("sealed frame too short for its kind and request id")
        kind, request_id = _INNER.unpack_from(inner)
        return kind, request_id, inner[_INNER.size :]
