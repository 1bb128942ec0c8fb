"""Who is alive: failure detection from probes' suspicions and heartbeat advances (pure: no I/O,
time passed in).

Two signals, both timed with our own monotonic clock (never a remote wall clock):

- suspicions (primary, memberlist's SWIM): a node whose probes of a peer fail, directly and
  through `indirect_probes` others (daemon/cluster/probes.py), lists the peer with the freshness
  (incarnation, heartbeat) it held for it in its own signed value of the `suspicions` map. A
  live peer named at a freshness >= the one we hold becomes suspect at once, and dead after
  suspicion_timeout(n) without an advance. The suspicion latches: the observer dropping the
  target from its value later (it keeps values small) does not clear it; only an advance of
  the peer's freshness does. The suspected node refutes by publishing its record at once with
  the next heartbeat (daemon/cluster/node.py), which clears the suspicion everywhere it arrives.
- heartbeat silence (backstop): every node rewrites its signed record at least every
  refresh_interval(n); a peer whose freshness has not advanced for suspect_timeout(n) is
  suspect, for dead_timeout(n) dead.

States and transitions (events are reported by tick(), in the order they happened; the ones
observe() and observe_suspicions() cause can also be taken at once with take_events()):

    (first seen) ------------------------------------------------> alive     "joined"
    alive   -- suspicion at our freshness, or silence ------------> suspect   "suspect"
    suspect -- suspicion_timeout since suspected, or dead_timeout of silence -> dead  "dead"
    suspect -- advance ------------------------------------------> alive     "alive"   (alive again)
    dead | left -- advance (new heartbeat or new incarnation) ---> alive     "rejoined"
    any     -- record with status "left" that is fresher ---------> left      "left"    (at once)

Timeouts scale with log10 of the cluster size like memberlist's, because news needs about
log(n) gossip rounds to reach everyone; the record refresh interval grows with n so that the
cluster-wide rate of record writes stays at `refresh_rate` per heartbeat interval:

    scale(n)              = log10(max(n, 10))                1 up to 10 nodes, 2 at 100, 3 at 1000
    suspicion_timeout(n)  = suspect_mult x scale(n) x probe_interval
    refresh_interval(n)   = heartbeat_interval x max(1, n / refresh_rate)
    suspect_timeout(n)    = suspect_mult x max(scale(n) x heartbeat_interval, refresh_interval(n))
    dead_timeout(n)       = dead_mult x suspect_timeout(n)

With the defaults (heartbeat_interval 1 s, probe_interval 1 s, suspect_mult 4, dead_mult 3,
refresh_rate 3):

    nodes   record refresh   suspicion -> dead   silence: suspect / dead (backstop)
    3           1 s                4 s                 4 s / 12 s
    10          3.3 s              4 s                13 s / 40 s
    100        33 s                8 s               133 s / 400 s
    1000      333 s               12 s              1333 s / 4000 s

A node first seen with status "left" is recorded as left without an event (we learn
history, nothing happened just now). Our own id is always alive and never reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping

Status = Literal["alive", "suspect", "dead", "left"]
EventKind = Literal["joined", "suspect", "dead", "alive", "rejoined", "left"]


Freshness = tuple[int, int]


@dataclass(frozen=True)
class MembershipConfig:
    heartbeat_interval: float = 1.0
    suspect_mult: float = 4.0
    dead_mult: float = 3.0
    probe_interval: float = 1.0
    refresh_rate: float = 3.0  # record refreshes per heartbeat interval, cluster-wide (README)

    def __post_init__(self) -> None:
        if not self.heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive")
        if not self.probe_interval > 0:
            raise ValueError("probe_interval must be positive")
        if not self.refresh_rate > 0:
            raise ValueError("refresh_rate must be positive")
        if not self.suspect_mult > 0:
            raise ValueError("suspect_mult must be positive")
        if not self.dead_mult > 1:
            raise ValueError("dead_mult must be above 1 (dead comes after suspect)")

    @staticmethod
    def scale(cluster_size: int) -> float:
        return math.log10(max(cluster_size, 10))

    def refresh_interval(self, cluster_size: int) -> float:
        """How often a node rewrites its record when nothing about it changed."""
        return self.heartbeat_interval * max(1.0, cluster_size / self.refresh_rate)

    def suspicion_timeout(self, cluster_size: int) -> float:
        return self.suspect_mult * self.scale(cluster_size) * self.probe_interval

    def suspect_timeout(self, cluster_size: int) -> float:
        propagation = self.scale(cluster_size) * self.heartbeat_interval
        return self.suspect_mult * max(propagation, self.refresh_interval(cluster_size))

    def dead_timeout(self, cluster_size: int) -> float:
        return self.dead_mult * self.suspect_timeout(cluster_size)


@dataclass(frozen=True)
class MembershipEvent:
    kind: EventKind
    node_id: bytes
    at: float  # local monotonic time the transition happened
    previous: Status | None  # state before (None when first seen)


@dataclass
class Member:
    """What we know about one peer; `status` is the last state reported through an event."""

    node_id: bytes
    incarnation: int
    heartbeat: int
    record_status: str  # "alive" | "left", as the peer's own record says
    last_advance: float  # local monotonic time freshness last went up
    status: Status = "alive"
    suspected_since: float | None = None  # when a suspicion at the current freshness first counted
    last_status_change: float = 0.0

    @property
    def freshness(self) -> Freshness:
        return self.incarnation, self.heartbeat

    @property
    def is_suspected(self) -> bool:
        return self.suspected_since is not None


@dataclass
class Membership:
    self_id: bytes
    config: MembershipConfig = field(default_factory=MembershipConfig)

    def __post_init__(self) -> None:
        self._members: dict[bytes, Member] = {}
        self._pending: list[MembershipEvent] = []
        self._cluster_size = 1
        # observer -> {target -> freshness named}: every observer's current suspicions value.
        self._named: dict[bytes, dict[bytes, Freshness]] = {}
        # Bumped whenever a member's status may move other than by time alone (a member came or
        # went, a transition, a suspicion started, the cluster size changed): statuses() keeps
        # its answer until then or until the next timeout, so readers per gossip round and per
        # job-loop pass pay O(1), not O(members), while nothing changes.
        self.version = 0
        self._statuses: dict[bytes, Status] = {}
        self._statuses_key: tuple[int, float] = (-1, float("-inf"))  # (version, valid until)
        self._timeouts_for: tuple[int, tuple[float, float, float]] = (0, (0.0, 0.0, 0.0))
        self._ticked: object = None  # the statuses() answer the last tick left every member in

    # -- input ---------------------------------------------------------------------------

    def observe(self, node_id: bytes, incarnation: int, heartbeat: int, status: str, now: float) -> None:
        """Record a (verified) node record seen now; events it causes come out of the next tick().

        A record no fresher than what we hold changes nothing, so the same record arriving
        twice, or an old one arriving late, can never revive a node.
        """
        self._observe(node_id, incarnation, heartbeat, status, now)
        member = self._members.get(node_id)
        if member is not None and self._statuses.get(node_id) != self._timed_status(member, now):
            self.version += 1  # e.g. silent past the suspect timeout, no tick since, now advanced

    def _observe(self, node_id: bytes, incarnation: int, heartbeat: int, status: str, now: float) -> None:
        if status not in ("alive", "left"):
            raise ValueError(f"record status must be 'alive' or 'left', got {status!r}")
        if node_id == self.self_id:
            return
        member = self._members.get(node_id)
        if member is None:
            member = Member(
                node_id, incarnation, heartbeat, status, now, "left" if status == "left" else "alive"
            )
            self._members[node_id] = member
            self.version += 1
            if status != "left":
                self._emit("joined", member, now, None)
                self._apply_named(member, now)
            return
        if (incarnation, heartbeat) <= member.freshness:
            return
        member.incarnation, member.heartbeat = incarnation, heartbeat
        member.record_status = status
        member.last_advance = now
        since, member.suspected_since = member.suspected_since, None
        self._apply_named(member, now)  # a suspicion may already name this newer freshness
        if member.is_suspected:
            # Still suspected (we had missed the record the suspicion names): the timer runs on
            # from when the suspicion first counted here, not from this late record.
            member.suspected_since = since if since is not None else member.suspected_since
            self.version += 1
            return
        if status == "left":
            self._transition(member, "left", now)
        elif member.status in ("dead", "left"):
            self._transition(member, "alive", now, kind="rejoined")
        elif member.status == "suspect":
            self._transition(member, "alive", now)

    def observe_suspicions(self, observer: bytes, targets: Mapping[bytes, Freshness], now: float) -> None:
        """Take an observer's (verified) suspicions value, replacing the one it had.

        A live target named at a freshness >= the one we hold becomes suspect now; a target
        the value no longer names stays suspected until its freshness advances (the latch:
        observers drop dead targets to keep values small)."""
        self._named[observer] = dict(targets)
        for target in targets:
            member = self._members.get(target)
            if member is not None:
                self._apply_named(member, now)

    def suspected_by(self, node_id: bytes) -> int:
        """How many observers' values name this node at (or past) the freshness we hold."""
        member = self._members.get(node_id)
        if member is None:
            return 0
        return sum(1 for named in self._named.values() if named.get(node_id, (-1, -1)) >= member.freshness)

    def suspecting(self, node_id: bytes, now: float) -> Iterable[bytes]:
        """Who this observer still names (for its own value): nothing that advanced past the
        named freshness, left, is unknown, or has been dead for another suspicion timeout."""
        for target, named in self._named.get(node_id, {}).items():
            member = self._members.get(target)
            if member is None or member.record_status == "left" or member.freshness > named:
                continue
            status = self._timed_status(member, now)
            dead_for = now - member.last_status_change if member.status == "dead" else 0.0
            if status == "dead" and dead_for >= self.config.suspicion_timeout(self._cluster_size):
                continue
            yield target

    def forget(self, node_id: bytes) -> None:
        """Drop a peer entirely (e.g. its record was retired from the document)."""
        self._members.pop(node_id, None)
        self._named.pop(node_id, None)
        self.version += 1

    def tick(self, now: float, cluster_size: int | None = None) -> list[MembershipEvent]:
        """Apply timeouts at `now`; returns every event since the last tick, oldest first.

        cluster_size (all nodes the document knows, including this one) scales the
        timeouts; when omitted the last value given is kept.
        """
        if cluster_size is not None and max(1, int(cluster_size)) != self._cluster_size:
            self._cluster_size = max(1, int(cluster_size))
            self.version += 1  # timeouts scale with it
        statuses = self.statuses(now)
        if statuses is not self._ticked:  # the same answer: every status is what it was
            for node_id, member in self._members.items():
                target = statuses[node_id]
                if target == member.status:
                    continue
                if member.status == "alive" and target == "dead":
                    # Never skip a state: a long pause between ticks still reports suspect first.
                    self._transition(member, "suspect", now)
                self._transition(member, target, now)
            self._ticked = self.statuses(now)
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

    def statuses(self, now: float) -> dict[bytes, Status]:
        """Every member's status at `now`, as status() gives it. The same dict (do not change
        it) until a member's status may have moved: callers tell "no change" by identity."""
        version, valid_until = self._statuses_key
        if version == self.version and now < valid_until:
            return self._statuses
        self._statuses = {
            node_id: self._timed_status(member, now) for node_id, member in self._members.items()
        }
        deadlines = (self._next_timeout(member, now) for member in self._members.values())
        self._statuses_key = (self.version, min(deadlines, default=float("inf")))
        return self._statuses

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
        # Written as deadlines (not elapsed >= timeout) so statuses() computes the same instants.
        dead_after, suspicion_timeout, suspect_after = self._timeouts()
        if now >= member.last_advance + dead_after:
            return "dead"
        if member.suspected_since is not None:
            return "dead" if now >= member.suspected_since + suspicion_timeout else "suspect"
        if now >= member.last_advance + suspect_after:
            return "suspect"
        return "alive"

    def _timeouts(self) -> tuple[float, float, float]:
        """(dead, suspicion, suspect) timeouts at the current cluster size, computed once per
        size: asked for every member whenever statuses are computed (each has a log10)."""
        if self._timeouts_for[0] != self._cluster_size:
            config, n = self.config, self._cluster_size
            self._timeouts_for = (
                n,
                (config.dead_timeout(n), config.suspicion_timeout(n), config.suspect_timeout(n)),
            )
        return self._timeouts_for[1]

    def _next_timeout(self, member: Member, now: float) -> float:
        """The first time after `now` at which _timed_status(member) may differ (inf: never
        by time alone). A freshness advance only moves these later, so it needs no bump."""
        if member.record_status == "left":
            return float("inf")
        dead_after, suspicion_timeout, suspect_after = self._timeouts()
        deadlines = [member.last_advance + dead_after]
        if member.suspected_since is not None:
            deadlines.append(member.suspected_since + suspicion_timeout)
        else:
            deadlines.append(member.last_advance + suspect_after)
        return min((deadline for deadline in deadlines if deadline > now), default=float("inf"))

    def _apply_named(self, member: Member, now: float) -> None:
        """Start the suspicion of a live member some observer names at its current freshness."""
        if (
            member.suspected_since is not None
            or member.record_status == "left"
            or member.status in ("dead", "left")
        ):
            return
        if any(named.get(member.node_id, (-1, -1)) >= member.freshness for named in self._named.values()):
            member.suspected_since = now
            self.version += 1  # a suspect by silence now dies on the (shorter) suspicion timeout
            self._transition(member, "suspect", now)

    def _transition(self, member: Member, target: Status, now: float, kind: EventKind | None = None) -> None:
        previous = member.status
        if previous == target:
            return
        member.status = target
        member.last_status_change = now
        self.version += 1
        self._emit(kind or target, member, now, previous)

    def _emit(self, kind: EventKind, member: Member, now: float, previous: Status | None) -> None:
        self._pending.append(MembershipEvent(kind, member.node_id, now, previous))
