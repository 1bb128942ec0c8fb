"""SWIM probes (memberlist's probe and indirect probe): a thin trio driver over Transport.request.

Every probe_interval the node pings the next peer of a shuffled round robin
(daemon/cluster/probe_order.py) over the ordinary sealed transport (payloads: daemon/cluster/probe_wire.py).
No ack within probe_timeout: it asks `indirect_probes` other live peers to ping the target
for it, and pings it directly once more meanwhile (a lost frame is the usual cause); no ack
from anyone by the end of the probe interval: the target is reported to `on_failed`, which
writes a suspicion into the document (daemon/cluster/node.py). What a suspicion means is decided by
daemon/cluster/membership.py, not here.

A probe payload that is malformed is dropped with one log line; the requester gets the reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping

import trio

from daemon.cluster.gossip import pick
from daemon.cluster.probe_order import ProbeOrder
from daemon.cluster.probe_wire import (
    Ping,
    ProbeError,
    decode_probe,
    encode_ack,
    encode_ping,
    encode_ping_request,
    is_ack_from,
)
from daemon.cluster.wire import NACK
from daemon.log import EventLog
from daemon.transport.interface import Transport, TransportError


@dataclass(frozen=True)
class ProbeSettings:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_probes: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("probe_timeout must be positive and shorter than probe_interval")
        if self.indirect_probes < 0:
            raise ValueError("indirect_probes must not be negative")


class Prober:
    def __init__(
        self,
        *,
        node_id: bytes,
        transport: Transport,
        rng: random.Random,
        settings: ProbeSettings,
        candidates: Callable[[], Mapping[bytes, str]],
        on_failed: Callable[[bytes], None],
        log: EventLog,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.rng = rng
        self.settings = settings
        self.candidates = candidates  # node id -> address of every peer worth probing (not dead, not left)
        self.on_failed = on_failed
        self.log = log
        self.order = ProbeOrder(rng)
        self.last_ack: dict[bytes, float] = {}  # node id -> when it last acked one of our probes
        self.probes = 0
        self.failures = 0
        self.refused = 0

    async def run(self) -> None:
        while True:
            started = trio.current_time()
            await self.probe_next()
            await trio.sleep_until(started + self.settings.probe_interval)

    async def probe_next(self) -> None:
        peers = self.candidates()
        target = self.order.next(peers)
        if target is None:
            return
        self.probes += 1
        deadline = trio.current_time() + self.settings.probe_interval
        if await self._ping(peers[target], target, self.settings.probe_timeout):
            return
        helpers = pick(
            self.rng, [a for node_id, a in peers.items() if node_id != target], self.settings.indirect_probes
        )
        acked = False
        async with trio.open_nursery() as nursery:

            async def attempt(via: str, payload: bytes) -> None:
                nonlocal acked
                if await self._acked(via, payload, target, deadline - trio.current_time()):
                    acked = True
                    nursery.cancel_scope.cancel()

            nursery.cancel_scope.deadline = deadline
            nursery.start_soon(attempt, peers[target], encode_ping(target))
            for helper in helpers:
                nursery.start_soon(attempt, helper, encode_ping_request(target, peers[target]))
        if not acked:
            self.failures += 1
            self.log.info("probe failed", target=target.hex()[:12], addr=peers[target], helpers=len(helpers))
            self.on_failed(target)

    async def _ping(self, address: str, target: bytes, timeout: float) -> bool:
        return await self._acked(address, encode_ping(target), target, timeout)

    async def _acked(self, via: str, payload: bytes, target: bytes, timeout: float) -> bool:
        """Send a ping or ping-req to `via`; True when the answer is `target`'s ack."""
        try:
            reply = await self.transport.request(via, payload, max(timeout, 0.001))
        except TransportError:
            return False
        if is_ack_from(reply, target):
            self.last_ack[target] = trio.current_time()
            return True
        return False

    async def handle(self, sender: str, payload: bytes) -> bytes | str:
        """Answer a ping (ack if it names us) or a ping-req (ack if the target acked us)."""
        try:
            probe = decode_probe(payload)
        except ProbeError as exc:
            self.refused += 1
            self.log.warning("bad probe dropped", reason=str(exc), **{"from": sender})
            return str(exc)
        if isinstance(probe, Ping):
            return encode_ack(self.node_id) if probe.target == self.node_id else "ping names another node"
        if probe.target == self.node_id:
            return encode_ack(self.node_id)
        acked = await self._ping(probe.address, probe.target, self.settings.probe_timeout)
        return encode_ack(probe.target) if acked else NACK
