"""The job state machine: one node's report of its attempt at a job, and the legal moves.

Each node writes only its own run record per job (`runs[f"{job}:{node}"]`), rewriting it
whole as its attempt moves on. The job's state as users see it is derived from all
run records together (see scheduling.job_status); no node ever writes another's state.

A node's own record moves:

    declined ──► claimed ──► running ──► succeeded | failed | cancelled | timed_out
       ▲  │  └───────────────────▲ │
       └──┘          │           │ │
                     └───────────┴─┴──► yielded ──► claimed | running   (lost a conflict, or formd
                                                             restarted mid-run; may take the job up again)

`declined` = it was the node to run the job but lacked capacity at that moment; it may
claim later. A claim (claimed or running) may also end in a decline marked `unable`, for
good: the node could not get the job's image (no holder delivered it, the registry did not)
or its inputs (while a holder of them lives), so it is not asked again; when every capable
node is unable, the job fails with all their reasons (pack_manager/scheduling.py). A claim
starts as `running` straight away when the node already holds every input (nothing to fetch
first): one record update fewer per job, and `running` is as much a claim as `claimed` for
the conflict rule. `yielded` = it stopped because its claim lost a conflict. A dead node
writes nothing: its successor claims with attempt+1, and readers see the dead node's stale
claim beside the newer attempt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from metrics_agent.wire import WireError, need_int, need_list, need_map, need_str

DECLINED = "declined"
CLAIMED = "claimed"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
TIMED_OUT = "timed_out"
YIELDED = "yielded"

RUN_STATES = (DECLINED, CLAIMED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, YIELDED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
ACTIVE_STATES = (CLAIMED, RUNNING)

# Job states as users see them (`form status`): the run states that are final, plus these.
QUEUED = "queued"
UNSCHEDULABLE = "unschedulable"
JOB_STATES = (QUEUED, CLAIMED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, UNSCHEDULABLE)

_MOVES = {
    None: {DECLINED, CLAIMED, RUNNING, FAILED},  # FAILED: the successor gives up when attempts ran out
    DECLINED: {DECLINED, CLAIMED, RUNNING, FAILED},
    CLAIMED: {RUNNING, YIELDED, CANCELLED, FAILED, TIMED_OUT, DECLINED},
    RUNNING: {SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, YIELDED, DECLINED},
    YIELDED: {DECLINED, CLAIMED, RUNNING, FAILED},  # lost a conflict once; may take the job up again later
    SUCCEEDED: set(),
    FAILED: set(),
    CANCELLED: set(),
    TIMED_OUT: set(),
}

MAX_REASON = 2000
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class TransitionError(ValueError):
    """A move the state machine does not allow (a bug in the caller, never peer input)."""


@dataclass(frozen=True, slots=True)
class OutputRef:
    name: str
    digest: str
    size: int

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class RunReport:
    """The body of one node's run record for one job."""

    state: str
    attempt: int
    reason: str = ""
    updated_ms: int = 0  # writer's wall clock, for display only
    started_ms: int = 0
    finished_ms: int = 0
    exit_code: int | None = None
    outputs: tuple[OutputRef, ...] = ()
    result_digest: str | None = None  # what replicas compare; blake3 hex over the outputs
    log_digest: str | None = None
    unable: bool = False  # a decline for good (see the module docstring)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "attempt": self.attempt,
            "reason": self.reason,
            "updated_ms": self.updated_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "exit_code": self.exit_code,
            "outputs": [o.to_wire() for o in self.outputs],
            "result_digest": self.result_digest,
            "log_digest": self.log_digest,
            **({"unable": True} if self.unable else {}),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "RunReport":
        record = need_map(raw, "run")
        state = need_str(record, "state", limit=16)
        if state not in RUN_STATES:
            raise WireError(f"state: {state!r} is not a run state")
        exit_code = record.get("exit_code")
        if exit_code is not None and (
            not isinstance(exit_code, int) or isinstance(exit_code, bool) or not -(2**31) <= exit_code < 2**31
        ):
            raise WireError("exit_code: expected a 32-bit integer or nil")
        outputs = []
        for item in need_list(record, "outputs", limit=64):
            entry = need_map(item, "output")
            outputs.append(
                OutputRef(
                    need_str(entry, "name", limit=256), _digest(entry, "digest"), need_int(entry, "size")
                )
            )
        return cls(
            state=state,
            attempt=need_int(record, "attempt", low=1, high=1000),
            reason=need_str(record, "reason", limit=MAX_REASON),
            updated_ms=need_int(record, "updated_ms"),
            started_ms=need_int(record, "started_ms"),
            finished_ms=need_int(record, "finished_ms"),
            exit_code=exit_code,
            outputs=tuple(outputs),
            result_digest=_digest(record, "result_digest", optional=True),
            log_digest=_digest(record, "log_digest", optional=True),
            unable=record.get("unable") is True and state == DECLINED,
        )


def _digest(record: Any, key: str, optional: bool = False) -> str | None:
    value = need_str(record, key, limit=64, optional=optional)
    if value is not None and not _HEX_DIGEST.fullmatch(value):
        raise WireError(f"{key}: not a blake3 hex digest")
    return value


def advance(current: RunReport | None, new_state: str, **changes: Any) -> RunReport:
    """The next report for this node's own record, or TransitionError for an illegal move."""
    old_state = current.state if current else None
    if new_state not in _MOVES[old_state]:
        raise TransitionError(f"run: cannot move from {old_state or 'nothing'} to {new_state}")
    reason = changes.pop("reason", "")
    changes.setdefault("unable", False)  # only the decline that says so is for good
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    if current is None:
        return RunReport(state=new_state, reason=reason, **changes)
    return replace(current, state=new_state, reason=reason, **changes)
