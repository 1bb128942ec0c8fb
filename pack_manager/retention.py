"""When finished jobs leave the document, and who removes them. Pure: no I/O; times are
wall-clock milliseconds passed in.

A job is retired (its job record, every run record and its cancel record deleted in one
transaction) once it is final as `form status` shows it (scheduling.job_status), no live node
still runs it, and `retention` has passed since the newest time stamped in any of its
records. Run and cancel records whose job record is gone (a late write from a node that was
away) are retired the same way, each on its own stamp.

Deletes cannot be signed, and a replica that refuses a delete refuses the whole diff that
carries it, so the rule receivers apply must hold whenever an honest deleter's did (see
crdt_state/document.py): receivers decide from the entry they hold and their own clock alone,
accepting once `retention - skew` has passed since that entry's stamp. The deleter waited for
`retention` after the newest stamp of all the job's records by its own clock, and clocks of
nodes that talk agree within the transport's ±60 s window, so every receiver agrees; the rule
is monotone in time, so a replica that refused once accepts when the same delete comes again.

One node deletes, not all of them: the first live node in the job's placement order, at
`retention`; any node once `retention + grace` has passed (the first one died or is cut off).
Two nodes deleting the same keys is harmless (the CRDT merges the deletes), just wasted work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .jobstate import FINAL_STATES
from .placement import DEFAULT_POLICY, rank

SKEW_ALLOWANCE_MS = 120_000  # twice the transport's ±60 s clock window


@dataclass(frozen=True, slots=True)
class RetentionRule:
    retention_ms: int
    grace_ms: int = 60_000  # after retention, how long the first-ranked node has before anyone deletes
    skew_ms: int = SKEW_ALLOWANCE_MS


def stamp_ms(map_name: str, body: Any) -> int:
    """The newest writer's time an entry carries (0 when it carries none a reader can use)."""
    if not isinstance(body, Mapping):
        return 0
    keys = {
        "jobs": ("submitted_ms",),
        "runs": ("updated_ms", "started_ms", "finished_ms"),
        "cancels": ("requested_ms",),
    }
    times = [body.get(key) for key in keys.get(map_name, ())]
    return max((t for t in times if isinstance(t, int) and not isinstance(t, bool)), default=0)


def due_ms(stamps: Iterable[int], rule: RetentionRule) -> int:
    """When records with these stamps may be retired: retention after the newest."""
    return max(stamps, default=0) + rule.retention_ms


def job_retirable(
    state: str, live_claims: int, stamps: Iterable[int], now_ms: int, rule: RetentionRule
) -> bool:
    """A job (state as job_status says) may leave the document: final, nobody alive still
    running it, and retention past its newest record."""
    return state in FINAL_STATES and live_claims == 0 and now_ms >= due_ms(stamps, rule)


def deletes_now(
    job_id: bytes,
    live_nodes: Iterable[bytes],
    me: bytes,
    now_ms: int,
    due: int,
    rule: RetentionRule,
    policy: str = DEFAULT_POLICY,
) -> bool:
    """Whether `me` should write the delete of retirable records at `now_ms`."""
    if now_ms < due:
        return False
    if now_ms >= due + rule.grace_ms:
        return True
    live = set(live_nodes)
    return bool(live) and rank(job_id, live, policy)[0] == me


def accepts_remote_delete(map_name: str, held_body: Any, now_ms: int, rule: RetentionRule) -> bool:
    """The receivers' rule: may a peer's update remove an entry we hold with this body?"""
    if map_name not in ("jobs", "runs", "cancels"):
        return False
    return now_ms >= stamp_ms(map_name, held_body) + rule.retention_ms - rule.skew_ms
