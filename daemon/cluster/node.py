"""The node: a thin trio driver around the document, the sync protocol and membership.

It runs unchanged over any Transport (net_transport for formd, mem_transport for the
simulation under MockClock): time comes from trio.current_time(), randomness from the
injected random.Random, metrics and persistence are injected, and there is no global state.

What it does, every so often:
- tick (tick_interval): sample capacity; write our own signed record (next heartbeat) as one
  whole value when it is due (daemon/cluster/record_refresh.py: every refresh_interval(n), which grows
  with the cluster, or early when our reservations changed); drop suspicions of ours that no
  longer count; let membership turn suspicions and silence into suspect/dead events.
- probe (probe_interval, daemon/cluster/probes.py): ping one peer, indirectly through others when it
  does not answer; a peer no one reached is written into our value of the `suspicions` map.
  A suspicion of this node at or past the freshness it last pushed with full retransmits is
  refuted by publishing at once, with full retransmits.
- gossip (gossip_interval): push queued updates (ours and ones newly accepted from peers)
  to `fanout` random live peers; each update until it has been sent retransmit_limit(n) times.
- anti-entropy (anti_entropy_interval, scaled past 32 nodes): a state-vector exchange with
  one random live peer, and with one dead one to notice it is back (or a seed when alone).
- join: the same exchange with the seeds until some peer answers.

Messages (daemon/cluster/gossip.py payloads of crdt_state/sync.py messages):
- request [SyncStep1(our sv)] -> reply [SyncStep2(what we lack), SyncStep1(their sv)];
  we then send [SyncStep2(what they lack)] when that is not empty.
- send [Update, Update, ...]: eager push. An update that depends on changes we have not
  seen is answered by the exchange above with its sender, so a lost frame heals at once;
  the update is kept until then and passed on like any other (daemon/cluster/held_back.py).
- notice [0xc0 + a node's signed record] (daemon/cluster/refutation.py): sent to a node whose newest
  write lost to a newer record of it that we show (ApplyResult.stale). A node that sees a
  record of its own newer than its last write, so told or in its own document, takes the next
  incarnation and republishes at once (memberlist's refutation).
Anything refused (bad payload, forged or stale record) is dropped with one log line.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import trio

from crdt_state import sync
from crdt_state.document import ApplyResult, ClusterDocument
from crdt_state.records import NodeRecord
from daemon.cluster.gossip import (
    BroadcastQueue,
    PayloadError,
    anti_entropy_interval,
    own_write_limit,
    pack_payload,
    pick,
    retransmit_limit,
    unpack_payload,
)
from daemon.cluster.held_back import HeldBack
from daemon.cluster.membership import Membership, MembershipConfig
from daemon.cluster.probe_wire import is_probe
from daemon.cluster.probes import Prober, ProbeSettings
from daemon.cluster.record_refresh import record_due, reservations_changed
from daemon.cluster.refutation import NoticeError, decode_notice, encode_notice, is_notice, outlives
from daemon.cluster.suspicions import kept, names_me, refutation_point, seal_suspicions, targets_of
from daemon.cluster.wire import SIDE_REQUEST, tag_of
from daemon.identity import Identity
from daemon.log import EventLog
from daemon.transport.interface import Transport, TransportError
from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import GpuUsage, NodeCapacity, apply_reservations

EMPTY_UPDATES = (b"", b"\x00\x00")  # pycrdt's encoding of "nothing"
REPAIR_ROUNDS = 3  # exchanges per repair while pushes from that peer stay uncovered


@dataclass(frozen=True)
class NodeSettings:
    gossip_interval: float = 0.2
    gossip_fanout: int = 3
    retransmit_mult: int = 4
    heartbeat_retransmit_mult: int = 1
    anti_entropy_interval: float = 30.0
    tick_interval: float = 1.0
    suspect_mult: float = 4.0
    dead_mult: float = 3.0
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_probes: int = 3
    refresh_rate: float = 3.0  # cluster-wide record refreshes per tick (daemon/cluster/record_refresh.py)
    request_timeout: float = 2.0
    push_budget_bytes: int = 1024 * 1024  # per peer per gossip round; the rest waits a round
    join_retry_interval: float = 1.0
    leave_timeout: float = 2.0

    def membership_config(self) -> MembershipConfig:
        return MembershipConfig(
            heartbeat_interval=self.tick_interval,
            suspect_mult=self.suspect_mult,
            dead_mult=self.dead_mult,
            probe_interval=self.probe_interval,
            refresh_rate=self.refresh_rate,
        )

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(self.probe_interval, self.probe_timeout, self.indirect_probes)


class Store(Protocol):
    """What the node needs from persistence (crdt_state.persistence.DocumentStore fits)."""

    def append(self, update: bytes, durable: bool) -> None: ...

    def snapshot(self, full_state: bytes) -> None: ...


def static_capacity(capabilities: NodeCapabilities) -> NodeCapacity:
    """Capacity for a node without a metrics sampler: everything free."""
    observed = NodeCapacity(
        cpu_millicores_idle=capabilities.cpu_millicores,
        memory_available_bytes=capabilities.memory_bytes,
        disk_free_bytes=capabilities.disk_bytes,
        gpus=tuple(GpuUsage(g.index, g.memory_bytes, 0) for g in capabilities.gpus),
    )
    return apply_reservations(capabilities, observed, ())


class Node:
    def __init__(
        self,
        *,
        identity: Identity,
        address: str,
        transport: Transport,
        document: ClusterDocument,
        capabilities: NodeCapabilities,
        incarnation: int,
        rng: random.Random,
        settings: NodeSettings = NodeSettings(),
        seeds: Sequence[str] = (),
        sample_capacity: Callable[[NodeCapabilities], NodeCapacity] | None = None,
        store: Store | None = None,
        bump_incarnation: Callable[[int], int] | None = None,
        wall_clock: Callable[[], float] = time.time,
        log: EventLog | None = None,
        version: str = "0",
        on_change: Callable[[], None] | None = None,
        side_handler: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.identity = identity
        self.address = address
        self.transport = transport
        self.document = document
        self.capabilities = capabilities
        self.incarnation = incarnation
        self.heartbeat = 0
        self.status = "alive"
        self.rng = rng
        self.settings = settings
        self.seeds = [seed for seed in seeds if seed != address]
        self.sample_capacity = sample_capacity or static_capacity
        self.store = store
        self._bump_incarnation = bump_incarnation or (lambda at_least: at_least + 1)
        self.wall_clock = wall_clock
        self.log = log or EventLog()
        self.version = version
        self.membership = Membership(identity.node_id, settings.membership_config())
        self.queue = BroadcastQueue()
        self.capacity: NodeCapacity | None = None
        self.started_at: float | None = None
        self.joined = False
        self.updates_applied = 0
        self.updates_refused = 0
        self._repairing: set[str] = set()
        self._held_back = HeldBack()  # pushed updates refused as missing, until their repair
        self._shapes: dict[bytes, tuple] = {}  # node id -> what its record says it is
        self._shapes_version = 0  # bumped when _shapes changes: peers() is kept until then
        self._peers: dict[tuple[str, ...], tuple[object, int, Mapping[bytes, str]]] = {}
        self._last_write = trio.current_time()  # of our own record
        self._written_capacity: dict | None = None
        self._suspects: dict[bytes, tuple[int, int]] = {}  # our value in the suspicions map
        # Our freshness as last pushed with full retransmits: a later periodic write goes out
        # with few and may not reach the observer that suspects us (see _observe_suspicions).
        self._spread: tuple[int, int] = (incarnation, 0)
        self.refutations = 0
        self.prober = Prober(
            node_id=identity.node_id,
            transport=transport,
            rng=rng,
            settings=settings.probe_settings(),
            candidates=self._probe_candidates,
            on_failed=self._suspect,
            log=self.log,
        )
        self._nursery: trio.Nursery | None = None
        # From the job layer: told of every accepted change to jobs/runs/cancels/nodes, and the
        # handler for side requests (0xc1 payloads, daemon/jobs/peer_requests.py).
        self.on_change = on_change
        self.side_handler = side_handler
        now = trio.current_time()
        for node_id, record in document.node_records().items():
            self.membership.observe(node_id, record.incarnation, record.heartbeat, record.status, now)
            self._note_shape(record)
        for key, entry in document.items("suspicions").items():
            if key == identity.node_hex:
                self._suspects = targets_of(entry)
            self.membership.observe_suspicions(entry.signer_id, targets_of(entry), now)

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve, publish, join and gossip until cancelled (use leave() to go gracefully)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.serve, self.handle)
            self.started_at = trio.current_time()
            self.publish()
            # Spread the periodic writes of nodes started together over the refresh interval.
            self._last_write -= self.rng.random() * self.membership.config.refresh_interval(
                self.cluster_size()
            )
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self.prober.run)
            nursery.start_soon(self._gossip_loop)
            nursery.start_soon(self._anti_entropy_loop)
            nursery.start_soon(self._join)
            task_status.started()

    async def leave(self) -> None:
        """Mark our record left and hand it straight to every peer we know, so they show us
        as left at once instead of waiting for the dead timeout. Requests, not one-way
        sends: the process exits right after, and a reply is the proof the record arrived."""
        self.status = "left"
        self.publish(durable=True)
        peers = self.peer_addresses(include_dead=False)
        updates = self.queue.take(byte_budget=self.settings.push_budget_bytes)
        payload = pack_payload([sync.encode(sync.Update(update)) for update in updates])
        told = 0

        async def tell(peer: str) -> None:
            nonlocal told
            try:
                await self.transport.request(peer, payload, self.settings.leave_timeout)
                told += 1
            except TransportError as exc:
                self.log.debug("could not tell peer we leave", peer=peer, reason=str(exc))

        with trio.move_on_after(self.settings.leave_timeout):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(tell, peer)
        self.log.info("left the cluster", peers=len(peers), told=told)

    # ---- our own record ---------------------------------------------------------------------

    def publish(self, *, durable: bool = False, significant: bool = False) -> None:
        """Write our record as one whole value with the next heartbeat, then queue the update
        for eager push (full retransmits when `significant` or the record changed in shape).
        Every write advances the heartbeat: peers treat a record that is not fresher than the
        one they hold as old news."""
        held = self.document.get("nodes", self.identity.node_hex)
        if (
            held is not None
            and held.node is not None
            and outlives(held.node, self.incarnation, self.heartbeat)
        ):
            self._move_past(held.node.incarnation)
        self.heartbeat += 1
        if self.capacity is None:
            self.capacity = self.sample_capacity(self.capabilities)
        record = NodeRecord(
            node_id=self.identity.node_id,
            public_key=self.identity.public_key,
            address=self.address,
            incarnation=self.incarnation,
            heartbeat=self.heartbeat,
            status=self.status,
            capabilities=self.capabilities.to_wire(),
            capacity=self.capacity.to_wire(),
            version=self.version,
            updated_ms=int(self.wall_clock() * 1000),
        )
        self.document.put_local("nodes", self.identity.node_hex, record.seal(self.identity.private_key))
        self._last_write = trio.current_time()
        self._written_capacity = record.capacity
        significant = self._note_shape(record) or significant
        if significant:
            self._spread = (self.incarnation, self.heartbeat)
        limit = own_write_limit(self._transmit_limit(significant), self.settings.gossip_fanout)
        for update in self.document.drain_local_updates():
            if self.store is not None:
                self.store.append(update, durable)
            self.queue.add(update, limit)

    def _note_shape(self, record: NodeRecord) -> bool:
        """Remember what the record says the node is; True if that changed."""
        shape = _shape(record)
        if self._shapes.get(record.node_id) == shape:
            return False
        self._shapes[record.node_id] = shape
        self._shapes_version += 1
        return True

    def _move_past(self, earlier: int) -> None:
        """Refute a record (or a suspicion) of ours newer than the last one we wrote, from an
        earlier life whose state this process lost (see daemon/cluster/refutation.py): take an
        incarnation above `earlier`, stored durably so a later restart starts above it too.
        The caller publishes."""
        self.incarnation = self._bump_incarnation(earlier)
        self.heartbeat = 0
        self.log.notice("own record from an earlier life seen", incarnation=earlier, taking=self.incarnation)

    def _refute(self, record: NodeRecord) -> None:
        """Move past `record` and republish at once (the new incarnation makes it a significant
        change: full retransmits), unless it is not newer than what we publish already."""
        if outlives(record, self.incarnation, self.heartbeat):
            self._move_past(record.incarnation)
            self.publish()

    def commit_local(self, *, durable: bool = False) -> None:
        """Store and queue for push what our other records (jobs, runs, cancels) changed."""
        for update in self.document.drain_local_updates():
            if self.store is not None:
                self.store.append(update, durable)
            self.queue.add(update, self._transmit_limit(True))

    def set_labels(self, labels: dict[str, str]) -> None:
        self.capabilities = self.capabilities.with_labels(labels)
        self.publish(durable=True)

    def set_named_capabilities(self, named: dict[str, int]) -> None:
        self.capabilities = self.capabilities.with_named(named)
        self.publish(durable=True)

    # ---- incoming -----------------------------------------------------------------------------

    async def handle(self, sender: str, payload: bytes) -> bytes | str | None:
        if is_probe(payload):
            return await self.prober.handle(sender, payload)
        if is_notice(payload):
            self._handle_notice(payload, sender)
            return None
        if tag_of(payload) == SIDE_REQUEST:
            try:
                return (
                    self.side_handler(payload)
                    if self.side_handler is not None
                    else "blob requests not served here"
                )
            except ValueError as exc:
                self.updates_refused += 1
                self.log.warning("bad message dropped", reason=str(exc), **{"from": sender})
                return str(exc)
        messages = self._decode(payload, sender)
        replies: list[sync.Message] = []
        needs_repair = False
        for message in messages:
            answer, result = self._handle_message(message, sender)
            if isinstance(message, sync.Update):
                # A pushed update we could not take (it builds on changes we lack, or it
                # was refused) is answered by a full exchange with its sender, as a request
                # of our own since one-way sends get no reply: the sender's diff against
                # our state vector is complete, so a gap heals at once.
                needs_repair = needs_repair or (result is not None and not result.accepted)
                if result is not None and result.missing:
                    self._held_back.add(sender, message.update)
            else:
                replies.extend(answer)
        if needs_repair and self._nursery is not None and sender not in self._repairing:
            self._repairing.add(sender)
            self._nursery.start_soon(self._repair, sender)
        # Always a reply (maybe an empty list): a requester learns its payload arrived.
        return pack_payload([sync.encode(m) for m in replies])

    def _handle_notice(self, payload: bytes, sender: str) -> None:
        try:
            record = decode_notice(payload)
        except NoticeError as exc:
            self.updates_refused += 1
            self.log.warning("bad message dropped", reason=str(exc), **{"from": sender})
            return
        if record.node_id == self.identity.node_id:
            self._refute(record)

    def _tell_stale(self, stale_keys: frozenset[str], sender: str) -> None:
        """A node's newest write lost to a newer record of it that we show (daemon/cluster/refutation.py):
        hand it that record. Sent to the address it had and to whoever passed us the update,
        often the node itself, which may be back at another address; a relay ignores it."""
        if self._nursery is None:
            return
        for key in sorted(stale_keys):
            if key == self.identity.node_hex:
                continue  # the document has written our newest record again
            held = self.document.get("nodes", key)
            if held is None or held.node is None:
                continue
            notice = encode_notice(held.envelope)
            for address in dict.fromkeys((held.node.address, sender)):
                if address != self.address:
                    self._nursery.start_soon(self.transport.send, address, notice)

    def _decode(self, payload: bytes, sender: str) -> list[sync.Message]:
        try:
            return [sync.decode(item) for item in unpack_payload(payload)]
        except (PayloadError, sync.SyncError) as exc:
            self.updates_refused += 1
            self.log.warning("bad message dropped", reason=str(exc), **{"from": sender})
            return []

    def _handle_message(
        self, message: sync.Message, sender: str
    ) -> tuple[list[sync.Message], ApplyResult | None]:
        if not isinstance(message, sync.SyncStep1) and message.update in EMPTY_UPDATES:
            return [], None
        try:
            replies, result = sync.handle_message(self.document, message)
        except sync.SyncError as exc:
            self.updates_refused += 1
            self.log.warning("bad message dropped", reason=str(exc), **{"from": sender})
            return [], None
        if result is not None:
            self._accepted(message, result, sender)
        return [
            r for r in replies if not (isinstance(r, sync.SyncStep2) and r.update in EMPTY_UPDATES)
        ], result

    def _accepted(self, message: sync.Message, result: ApplyResult, sender: str) -> None:
        if not result.accepted:
            if not result.missing:
                self.updates_refused += 1
                self.log.warning("bad update dropped", reason=result.reason, **{"from": sender})
            return
        if not (result.changed or result.added):
            return  # a duplicate: nothing to store or pass on
        if result.stale:
            self._tell_stale(result.stale, sender)
        # Stored and passed on even when nothing visible changed (history behind a newer
        # record): replicas then hold the same items, so state vectors agree without a repair.
        self.updates_applied += 1
        if self.store is not None:
            self.store.append(message.update, False)
        now = trio.current_time()
        significant = False
        ours: NodeRecord | None = None
        named_me: list[tuple[int, int]] = []  # suspicions of this node that count
        for map_name, key in result.changed:
            if map_name == "suspicions":
                significant = True
                named = self._observe_suspicions(key, now)
                if named is not None:
                    named_me.append(named)
                continue
            if map_name != "nodes":
                significant = True
                continue
            entry = self.document.get("nodes", key)
            if entry is not None and entry.node is not None:
                record = entry.node
                if record.node_id == self.identity.node_id:
                    ours = record
                self.membership.observe(
                    record.node_id, record.incarnation, record.heartbeat, record.status, now
                )
                significant = self._note_shape(record) or significant
        # Joins, leaves and rejoins are logged the moment they are seen, not at the next tick.
        self._log_membership(self.membership.take_events())
        if isinstance(message, sync.Update):
            self.queue.add(message.update, self._transmit_limit(significant))  # pass it on: epidemic push
        if significant and self.on_change is not None:
            self.on_change()
        if ours is not None:
            self._refute(ours)  # a record of ours is shown only when newer than the one held
        if named_me:
            self._refute_suspicion(max(named_me))

    # ---- suspicions (daemon/cluster/probes.py, daemon/cluster/suspicions.py) ---------------------------------

    def _observe_suspicions(self, key: str, now: float) -> tuple[int, int] | None:
        """Take a changed suspicions value; the freshness it names for this node when that
        counts, else None. It counts at or past the freshness we last pushed with full
        retransmits, not merely at or past our latest write: a periodic write after that went
        out with heartbeat retransmits (one at 4 nodes) and may never have reached the observer,
        which then shows us dead after its suspicion timeout while we think the suspicion
        already answered. At scale the next periodic write comes long after that timeout."""
        entry = self.document.get("suspicions", key)
        if entry is None:
            return None
        targets = targets_of(entry)
        self.membership.observe_suspicions(entry.signer_id, targets, now)
        if entry.signer_id == self.identity.node_id:
            return None
        return names_me(targets, self.identity.node_id, self._spread)

    def _refute_suspicion(self, named: tuple[int, int]) -> None:
        """Publish at once past the freshness a suspicion names: that advance clears it everywhere."""
        point = refutation_point(named, (self.incarnation, self.heartbeat))
        if point is None:
            self._move_past(named[0])
        else:
            self.heartbeat = point[1]
        self.refutations += 1
        self.log.notice(
            "suspected by a peer: refuting", incarnation=self.incarnation, heartbeat=self.heartbeat + 1
        )
        self.publish(significant=True)

    def _probe_candidates(self) -> dict[bytes, str]:
        return self.peers(("alive", "suspect"))

    def _suspect(self, target: bytes) -> None:
        """Our probes of `target` failed: name it, at the freshness we hold, in our value."""
        member = self.membership.member(target)
        if member is None or self._suspects.get(target) == member.freshness:
            return
        self._write_suspicions({**self._suspects, target: member.freshness})

    def _prune_suspicions(self) -> None:
        remaining = kept(
            self._suspects, self.membership.suspecting(self.identity.node_id, trio.current_time())
        )
        if remaining != self._suspects:
            self._write_suspicions(remaining)

    def _write_suspicions(self, targets: dict[bytes, tuple[int, int]]) -> None:
        self._suspects = targets
        self.document.put_local(
            "suspicions", self.identity.node_hex, seal_suspicions(self.identity.private_key, targets)
        )
        self.membership.observe_suspicions(self.identity.node_id, targets, trio.current_time())
        self._log_membership(self.membership.take_events())
        self.commit_local()

    def _transmit_limit(self, significant: bool) -> int:
        """See daemon/cluster/gossip.py: full retransmits for what changes a node's identity or
        abilities, fewer for a heartbeat that only says "still here"."""
        mult = self.settings.retransmit_mult if significant else self.settings.heartbeat_retransmit_mult
        return retransmit_limit(mult, self.cluster_size())

    async def _repair(self, peer: str) -> None:
        """Exchange with a peer whose push we could not take, then pass on the pushes whose gap
        the exchange filled (daemon/cluster/held_back.py). With full retransmits: which keys a push
        touches is not known without applying it, and a significant change passed on with
        heartbeat retransmits left nodes without it (50 simulated nodes: 2 of 49 had not seen
        a label change 3.3 s later). Again while pushes from that peer stay uncovered (they
        came in after it had answered), a few times at most."""
        try:
            for _ in range(REPAIR_ROUNDS):
                if not await self.exchange(peer):
                    break  # unreachable: anti-entropy heals us later
                for update in self._held_back.settle(peer, self.document.state_vector()):
                    self.queue.add(update, self._transmit_limit(True))
                if not self._held_back.waiting(peer):
                    return
            self._held_back.drop(peer)
        finally:
            self._repairing.discard(peer)

    # ---- outgoing -----------------------------------------------------------------------------

    async def exchange(self, peer: str) -> bool:
        """A state-vector exchange both ways (join, anti-entropy, repair). True if the peer answered."""
        request = pack_payload([sync.encode(sync.SyncStep1(self.document.state_vector(), reply=True))])
        try:
            reply = await self.transport.request(peer, request, self.settings.request_timeout)
        except TransportError as exc:
            self.log.debug("exchange failed", peer=peer, reason=str(exc))
            return False
        answers: list[sync.Message] = []
        for message in self._decode(reply, peer):
            if isinstance(message, sync.Update):
                continue  # not part of an exchange
            answers.extend(self._handle_message(message, peer)[0])
        if answers:
            await self.transport.send(peer, pack_payload([sync.encode(m) for m in answers]))
        return True

    async def _tick_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.tick_interval)
            self.capacity = self.sample_capacity(self.capabilities)
            now = trio.current_time()
            refresh = self.membership.config.refresh_interval(self.cluster_size())
            moved = reservations_changed(self._written_capacity, self.capacity.to_wire())
            if record_due(now, self._last_write, refresh, moved, min_gap=5 * self.settings.tick_interval):
                self.publish()
            self._prune_suspicions()
            self._log_membership(self.membership.tick(trio.current_time(), self.cluster_size()))

    def _log_membership(self, events) -> None:
        # node_records() builds a dict of every node: once per batch, not per event (a node
        # starting in a 1000-node cluster logs 999 joins at once).
        records = self.document.node_records() if events else {}
        for event in events:
            record = records.get(event.node_id)
            address = record.address if record is not None else "?"
            fields = {"id": event.node_id.hex()[:12], "addr": address}
            words = {
                "joined": "peer joined",
                "suspect": "peer suspect",
                "dead": "peer dead",
                "alive": "peer alive again",
                "rejoined": "peer rejoined",
                "left": "peer left",
            }
            level = self.log.warning if event.kind in ("suspect", "dead") else self.log.info
            level(words[event.kind], **fields)

    async def _gossip_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.gossip_interval)
            await self.gossip_round()

    async def gossip_round(self) -> None:
        if not len(self.queue):
            return
        peers = pick(self.rng, self.peer_addresses(include_dead=False), self.settings.gossip_fanout)
        sends = []
        for peer in peers:
            updates = self.queue.take(self.settings.push_budget_bytes)
            if updates:
                sends.append((peer, pack_payload([sync.encode(sync.Update(u)) for u in updates])))
        if not sends:
            return
        with trio.move_on_after(self.settings.request_timeout):
            async with trio.open_nursery() as nursery:
                for peer, payload in sends:
                    nursery.start_soon(self.transport.send, peer, payload)

    async def _anti_entropy_loop(self) -> None:
        while True:
            base = anti_entropy_interval(self.settings.anti_entropy_interval, self.cluster_size())
            # Jitter so nodes started together do not exchange in lockstep.
            await trio.sleep(base * (0.5 + self.rng.random()))
            live = self.peer_addresses(include_dead=False)
            targets = pick(self.rng, live, 1) if live else pick(self.rng, self.seeds, 1)
            dead = [a for a in self.peer_addresses(include_dead=True) if a not in live]
            targets += pick(self.rng, dead, 1)
            for target in targets:
                await self.exchange(target)

    async def _join(self) -> None:
        while self.seeds and not self.joined:
            results: list[bool] = []

            async def try_seed(seed: str) -> None:
                results.append(await self.exchange(seed))

            async with trio.open_nursery() as nursery:
                for seed in self.seeds:
                    nursery.start_soon(try_seed, seed)
            if any(results):
                self.joined = True
                self.log.info(
                    "joined the cluster", seeds=",".join(self.seeds), nodes=len(self.document.node_records())
                )
                return
            if self.peer_addresses(include_dead=False):
                return  # someone found us first; anti-entropy takes it from here
            await trio.sleep(self.settings.join_retry_interval)

    # ---- views --------------------------------------------------------------------------------

    def cluster_size(self) -> int:
        # Asked for on every accepted update: the document keeps the count (counting the
        # records here would cost O(nodes) per update).
        return max(1, self.document.nodes_not_left())

    def peer_status(self, node_id: bytes, now: float | None = None) -> str:
        if node_id == self.identity.node_id:
            return self.status
        status = self.membership.status(node_id, trio.current_time() if now is None else now)
        return status or "dead"

    def peers(self, wanted: tuple[str, ...]) -> Mapping[bytes, str]:
        """Node id -> address of every other node whose status is in `wanted` (do not change
        it). Asked every gossip round and probe: computed again only when a status or a node's
        shape (its address among them) may have changed, O(1) otherwise."""
        statuses = self.membership.statuses(trio.current_time())
        cached = self._peers.get(wanted)
        if cached is not None and cached[0] is statuses and cached[1] == self._shapes_version:
            return cached[2]
        found = {
            node_id: record.address
            for node_id, record in self.document.node_records().items()
            if node_id != self.identity.node_id
            and record.address != self.address
            and statuses.get(node_id, "dead") in wanted
        }
        self._peers[wanted] = (statuses, self._shapes_version, found)
        return found

    @property
    def own_suspicions(self) -> Mapping[bytes, tuple[int, int]]:
        """The peers this node suspects (our value in the suspicions map; do not change it)."""
        return self._suspects

    def peer_addresses(self, *, include_dead: bool) -> list[str]:
        return list(
            self.peers(("alive", "suspect", "dead") if include_dead else ("alive", "suspect")).values()
        )


def _shape(record: NodeRecord) -> tuple:
    """The parts of a node record that say what the node is, as opposed to how it is doing."""
    return (record.address, record.status, record.incarnation, repr(record.capabilities))
