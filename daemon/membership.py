"""Who is alive: failure detection from heartbeat advances (pure: no I/O, time passed in).

Every node bumps the heartbeat counter in its own signed node record once per heartbeat
interval (and its incarnation on every start). A peer is alive while we keep *observing*
its freshness (incarnation, heartbeat) advance; we time that with our own monotonic clock
and never compare a remote wall clock with ours.

States and transitions (events are reported by tick(), in the order they happened; the ones
observe() causes can also be taken at once with take_events()):

    (first seen) ------------------------------------------------> alive     "joined"
    alive   -- no advance for suspect_timeout(n) ----------------> suspect   "suspect"
    suspect -- no advance for dead_timeout(n) (since last advance) -> dead    "dead"
    suspect -- advance ------------------------------------------> alive     "alive"   (alive again)
    dead | left -- advance (new heartbeat or new incarnation) ---> alive     "rejoined"
    any     -- record with status "left" that is fresher ---------> left      "left"    (at once)

Timeouts scale with log10 of the cluster size like memberlist's suspicion timeout, because
a heartbeat needs about log(n) gossip rounds to reach everyone:

    scale(n)           = log10(max(n, 10))                      1 up to 10 nodes, 2 at 100, 3 at 1000
    suspect_timeout(n) = suspect_mult × scale(n) × heartbeat_interval
    dead_timeout(n)    = dead_mult × suspect_timeout(n)

With the defaults (heartbeat_interval 1 s, suspect_mult 4, dead_mult 3):

    nodes       suspect after   dead after
    <= 10            4 s            12 s
    100              8 s            24 s
    1000            12 s            36 s

A node first seen with status "left" is recorded as left without an event (we learn
history, nothing happened just now). Our own id is always alive and never reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal

Status = Literal["alive", "suspect", "dead", "left"]
EventKind = Literal["joined", "suspect", "dead", "alive", "rejoined", "left"]


@dataclass(frozen=True)
class MembershipConfig:
    heartbeat_interval: float = 1.0
    suspect_mult: float = 4.0
    dead_mult: float = 3.0

    def __post_init__(self) -> None:
        if not self.heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive")
        if not self.suspect_mult > 0:
            raise ValueError("suspect_mult must be positive")
        if not self.dead_mult > 1:
            raise ValueError("dead_mult must be above 1 (dead comes after suspect)")

    @staticmethod
    def scale(cluster_size: int) -> float:
        return math.log10(max(cluster_size, 10))

    def suspect_timeout(self, cluster_size: int) -> float:
        return self.suspect_mult * self.scale(cluster_size) * self.heartbeat_interval

    def dead_timeout(self, cluster_size: int) -> float:
        return self.dead_mult * self.suspect_timeout(cluster_size)


@dataclass(frozen=True)
class MembershipEvent:
    kind: EventKind
    node_id: bytes
    at: float                # local monotonic time the transition happened
    previous: Status | None  # state before (None when first seen)

    def describe(self) -> str:
        words = {
            "joined": "peer joined",
            "suspect": "peer suspect",
            "dead": "peer dead",
            "alive": "peer alive again",
            "rejoined": "peer rejoined",
            "left": "peer left",
        }
        return f"{words[self.kind]}: {self.node_id.hex()[:12]}"


@dataclass
class Member:
    """What we know about one peer; `status` is the last state reported through an event."""

    node_id: bytes
    incarnation: int
    heartbeat: int
    record_status: str       # "alive" | "left", as the peer's own record says
    last_advance: float      # local monotonic time freshness last went up
    status: Status = "alive"

    @property
    def freshness(self) -> tuple[int, int]:
        return self.incarnation, self.heartbeat


@dataclass
class Membership:
    self_id: bytes
    config: MembershipConfig = field(default_factory=MembershipConfig)

    def __post_init__(self) -> None:
        self._members: dict[bytes, Member] = {}
        self._pending: list[MembershipEvent] = []
        self._cluster_size = 1

    # -- input ---------------------------------------------------------------------------

    def observe(self, node_id: bytes, incarnation: int, heartbeat: int, status: str, now: float) -> None:
        """Record a (verified) node record seen now; events it causes come out of the next tick().

        A record no fresher than what we hold changes nothing, so the same record arriving
        twice, or an old one arriving late, can never revive a node.
        """
        if status not in ("alive", "left"):
            raise ValueError(f"record status must be 'alive' or 'left', got {status!r}")
        if node_id == self.self_id:
            return
        member = self._members.get(node_id)
        if member is None:
            member = Member(node_id, incarnation, heartbeat, status, now,
                            "left" if status == "left" else "alive")
            self._members[node_id] = member
            if status != "left":
                self._emit("joined", member, now, None)
            return
        if (incarnation, heartbeat) <= member.freshness:
            return
        member.incarnation, member.heartbeat = incarnation, heartbeat
        member.record_status = status
        member.last_advance = now
        if status == "left":
            self._transition(member, "left", now)
        elif member.status in ("dead", "left"):
            self._transition(member, "alive", now, kind="rejoined")
        elif member.status == "suspect":
            self._transition(member, "alive", now)

    def forget(self, node_id: bytes) -> None:
        """Drop a peer entirely (e.g. its record was retired from the document)."""
        self._members.pop(node_id, None)

    def tick(self, now: float, cluster_size: int | None = None) -> list[MembershipEvent]:
        """Apply timeouts at `now`; returns every event since the last tick, oldest first.

        cluster_size (all nodes the document knows, including this one) scales the
        timeouts; when omitted the last value given is kept.
        """
        if cluster_size is not None:
            self._cluster_size = max(1, int(cluster_size))
        for member in self._members.values():
            target = self._timed_status(member, now)
            if target == member.status:
                continue
            if member.status == "alive" and target == "dead":
                # Never skip a state: a long pause between ticks still reports suspect first.
                self._transition(member, "suspect", now)
            self._transition(member, target, now)
        events, self._pending = self._pending, []
        return events

    def take_events(self) -> list[MembershipEvent]:
        """Events caused by observe() since the last tick()/take_events(), without applying
        timeouts: O(1), for a caller that wants to log joins, leaves and rejoins the moment
        they are seen rather than at its next tick."""
        events, self._pending = self._pending, []
        return events

    # -- queries -------------------------------------------------------------------------

    def status(self, node_id: bytes, now: float) -> Status | None:
        """The state at `now` (timeouts applied even between ticks); None for an unknown id."""
        if node_id == self.self_id:
            return "alive"
        member = self._members.get(node_id)
        if member is None:
            return None
        return self._timed_status(member, now)

    def since_heartbeat(self, node_id: bytes, now: float) -> float | None:
        """Seconds since we last saw this node's heartbeat advance (what `form nodes` shows)."""
        if node_id == self.self_id:
            return 0.0
        member = self._members.get(node_id)
        return None if member is None else max(0.0, now - member.last_advance)

    def member(self, node_id: bytes) -> Member | None:
        return self._members.get(node_id)

    def alive_ids(self, now: float) -> list[bytes]:
        """Every node (this one included) whose status at `now` is alive: the placement set."""
        alive = [n for n, m in self._members.items() if self._timed_status(m, now) == "alive"]
        return [self.self_id, *alive]

    def known_ids(self) -> Iterable[bytes]:
        return self._members.keys()

    @property
    def cluster_size(self) -> int:
        return self._cluster_size

    # -- internals -----------------------------------------------------------------------

    def _timed_status(self, member: Member, now: float) -> Status:
        if member.record_status == "left":
            return "left"
        silent = now - member.last_advance
        if silent >= self.config.dead_timeout(self._cluster_size):
            return "dead"
        if silent >= self.config.suspect_timeout(self._cluster_size):
            return "suspect"
        return "alive"

    def _transition(self, member: Member, target: Status, now: float, kind: EventKind | None = None) -> None:
        previous = member.status
        if previous == target:
            return
        member.status = target
        self._emit(kind or target, member, now, previous)

    def _emit(self, kind: EventKind, member: Member, now: float, previous: Status | None) -> None:
        self._pending.append(MembershipEvent(kind, member.node_id, now, previous))
