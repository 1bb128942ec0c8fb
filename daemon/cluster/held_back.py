"""Pushed updates refused as missing, kept until the repair that fills their gap (pure).

An eagerly pushed update that skips clocks of its writer (we missed that writer's previous
write, e.g. a heartbeat sent with few retransmits) is refused as missing and answered by a
state-vector exchange with its sender (daemon/cluster/node.py). The exchange brings the update's
content too, but as part of a diff, which is not passed on. Left at that, every node that
needs such a repair drops out of the epidemic for that update (at 50 nodes up to a third of
the receivers of a label change), which leaves some nodes that no one pushes it to until the
writer's next write or anti-entropy (seconds to a minute later). So the refused update is kept here,
per sender, and once the repair covered it the node passes it on as if it had accepted it.

The same push refused from two senders is handed back once (PASSED_ON remembers the last
ones handed back), so it is not queued twice.

Bounded: at most MAX_PER_SENDER updates per sender and MAX_SENDERS senders; beyond that the
oldest are forgotten (the repair still heals this node; only the forwarding is lost).
"""

from __future__ import annotations

from collections import OrderedDict

import blake3
import pycrdt

MAX_PER_SENDER = 64
MAX_SENDERS = 256
PASSED_ON = 1024


def covered(update: bytes, state_vector: bytes) -> bool:
    """Whether a document at `state_vector` holds every struct of `update`. pycrdt's diff of
    the update against that state starts with the count of writers that still have structs."""
    try:
        return pycrdt.get_update(update, state_vector)[0] == 0
    except Exception:  # pycrdt raises ValueError (or PanicException) for undecodable input
        return False


class HeldBack:
    def __init__(self) -> None:
        self._by_sender: OrderedDict[str, list[bytes]] = OrderedDict()
        self._passed_on: OrderedDict[bytes, None] = OrderedDict()  # digests handed back lately

    def __len__(self) -> int:
        return sum(len(updates) for updates in self._by_sender.values())

    def add(self, sender: str, update: bytes) -> None:
        updates = self._by_sender.setdefault(sender, [])
        self._by_sender.move_to_end(sender)
        if update not in updates:
            updates.append(update)
            del updates[:-MAX_PER_SENDER]
        while len(self._by_sender) > MAX_SENDERS:
            self._by_sender.popitem(last=False)

    def settle(self, sender: str, state_vector: bytes) -> list[bytes]:
        """The updates from `sender` that a document at `state_vector` now holds (to pass on);
        the others stay held for the next repair."""
        updates = self._by_sender.pop(sender, [])
        done: list[bytes] = []
        waiting: list[bytes] = []
        for update in updates:
            if not covered(update, state_vector):
                waiting.append(update)
                continue
            digest = blake3.blake3(update).digest(length=16)
            if digest not in self._passed_on:
                self._passed_on[digest] = None
                done.append(update)
        while len(self._passed_on) > PASSED_ON:
            self._passed_on.popitem(last=False)
        if waiting:
            self._by_sender[sender] = waiting
        return done

    def waiting(self, sender: str) -> bool:
        return bool(self._by_sender.get(sender))

    def drop(self, sender: str) -> None:
        self._by_sender.pop(sender, None)
