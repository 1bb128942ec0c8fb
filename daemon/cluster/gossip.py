"""Gossip decisions (pure): what to push, to whom, how often. The node does the sending.

Eager push works like memberlist's transmit-limited broadcast queue: every update this node
makes or newly accepts from a peer is queued and piggybacked on the gossip to `fanout`
random peers each gossip interval, until it has been sent retransmit_limit(mult, n) times.
Each node that accepts it does the same, so an update reaches everyone in O(log n) rounds
while each node sends it only a bounded number of times.

Two priorities, because every node rewrites its record every tick: an update that changes
what a node *is* (new node, address, status such as "left", incarnation, capabilities and
labels) goes out with retransmit_mult (memberlist's 4); one that only advances the heartbeat
and capacity figures goes out with heartbeat_retransmit_mult. Liveness tolerates a slow
heartbeat (suspicion takes seconds), and a receiver that misses one heals on the next
through the repair exchange, so heartbeat_retransmit_mult defaults to 1, which cuts
steady-state traffic about 4x against 4 (simulations/bench_gossip.py, N=10: 16.6 against
71.9 KiB/s sent per node, label seen everywhere within 0.4-0.7 s either way). That is safe
because a local update carries only its own transaction's inserts and deletes
(crdt_state/document.py): a receiver that missed another writer's newer version never sees an
old version deleted under it, so a heartbeat that arrives out of order is accepted, or at
worst asked for again as missing, never refused. A push refused as missing is passed
on once the repair exchange filled its gap (daemon/cluster/held_back.py), so repairs do not thin out
the epidemic. Anti-entropy (a state-vector exchange
with one random peer) repairs whatever the epidemic missed (a lost frame, a node that was
down), so the queue may drop things when full without harming convergence.

Payload on the wire (inside a sealed frame): msgpack array of encoded sync messages.
Several messages share one frame so a gossip round costs one frame per peer.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

import msgpack

MAX_MESSAGES_PER_PAYLOAD = 1024
T = TypeVar("T")


class PayloadError(ValueError):
    """A payload that is not a list of messages; the reason goes to the log."""


def pack_payload(messages: Sequence[bytes]) -> bytes:
    return msgpack.packb(list(messages), use_bin_type=True)


def unpack_payload(payload: bytes) -> list[bytes]:
    try:
        value = msgpack.unpackb(payload, raw=False, use_list=True, max_array_len=MAX_MESSAGES_PER_PAYLOAD)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise PayloadError(f"payload is not msgpack ({type(exc).__name__})") from None
    if not isinstance(value, list) or not all(isinstance(item, bytes) for item in value):
        raise PayloadError("payload is not a list of messages")
    return value


def retransmit_limit(mult: int, cluster_size: int) -> int:
    """How many times one node sends one update: memberlist's mult x ceil(log10(n + 1))."""
    return mult * max(1, math.ceil(math.log10(cluster_size + 1)))


def own_write_limit(limit: int, fanout: int) -> int:
    """Transmits for a node's own write: at least one gossip round's fanout. With a limit below
    the fanout (heartbeat retransmits in a cluster under 10 nodes: 1) the writer would hand its
    heartbeat to one peer, which passes it to one more: a random walk that leaves each of 3 peers
    without a given heartbeat about one time in three, so a peer can stay several refresh
    intervals behind and show the writer suspect by silence. This way the writer's first round
    reaches `fanout` peers; receivers pass it on with the usual limit, so it costs fanout - limit sends
    per write (none at 1000 nodes, where the limit is already 4)."""
    return max(limit, fanout)


def anti_entropy_interval(base: float, cluster_size: int) -> float:
    """memberlist's pushPullScale: unchanged up to 32 nodes, then grows with log2(n/32),
    so the cluster-wide rate of full exchanges stays bounded."""
    if cluster_size <= 32:
        return base
    return base * (math.ceil(math.log2(cluster_size) - math.log2(32)) + 1)


def pick(rng: random.Random, candidates: Sequence[T], count: int) -> list[T]:
    """Up to `count` distinct random candidates (all of them when there are fewer)."""
    if count >= len(candidates):
        chosen = list(candidates)
        rng.shuffle(chosen)
        return chosen
    return rng.sample(list(candidates), count)


@dataclass
class _Entry:
    update: bytes
    transmits: int
    order: int
    limit: int


@dataclass
class BroadcastQueue:
    """Updates waiting to be pushed, least-sent first, each until it hits its transmit limit."""

    max_entries: int = 4096
    _entries: list[_Entry] = field(default_factory=list)
    _counter: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, update: bytes, transmit_limit: int) -> None:
        """Queue an update to be sent `transmit_limit` times in all (at least once)."""
        self._counter += 1
        self._entries.append(_Entry(update, 0, self._counter, max(1, transmit_limit)))
        if len(self._entries) > self.max_entries:
            # Shed the most-sent, oldest entries: they have had their chance and anti-entropy
            # will deliver them where they are still missing.
            self._entries.sort(key=lambda e: (-e.transmits, e.order))
            del self._entries[: len(self._entries) - self.max_entries]

    def take(self, byte_budget: int) -> list[bytes]:
        """The updates for one peer: fewest transmits first, newest first among equals,
        oldest-first in the result (so one writer's updates arrive in the order made)."""
        self._entries.sort(key=lambda e: (e.transmits, -e.order))
        chosen: list[_Entry] = []
        used = 0
        for entry in self._entries:
            size = len(entry.update) + 8
            if chosen and used + size > byte_budget:
                continue
            if len(chosen) >= MAX_MESSAGES_PER_PAYLOAD:
                break
            chosen.append(entry)
            used += size
        for entry in chosen:
            entry.transmits += 1
        self._entries = [e for e in self._entries if e.transmits < e.limit]
        return [e.update for e in sorted(chosen, key=lambda e: e.order)]
