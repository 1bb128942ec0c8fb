"""The checks every run ends with (pure: plain facts in, violations out).

    every_job_final     every submitted job reached a final state, unless no capable node
                        survived; a job whose only copy died with its submitter (down for
                        good, or its state dir lost) before it spread is reported as lost
                        with its submitter, not as a violation
    no_duplicate_success no job succeeded on more nodes than it asked for, except where a
                        partition separated the nodes while the job was live (counted apart)
    documents_identical after healing and settling, every live node's document has the same
                        state vector and the same content
    no_dead_claims      no job still waits on a claim held by a node that is down
    claims_backed       no live node holds an active claim on a job it is not running
    capability_slots    at no instant does a node run more jobs needing a named capability
                        than that capability's max_concurrency on the node (from every run's
                        start and end, as the simulated executors see them)

Each check returns human-readable violations; the run fails when any list is non-empty.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

from pack_manager.jobstate import ACTIVE_STATES, FINAL_STATES, SUCCEEDED, RunReport

CHECKS = (
    "every_job_final",
    "no_duplicate_success",
    "documents_identical",
    "no_dead_claims",
    "claims_backed",
    "capability_slots",
)


@dataclass(frozen=True)
class PartitionSpan:
    start_ms: int  # node wall-clock milliseconds, as in run records
    end_ms: int
    minority: frozenset[str]  # node ids (hex) on the smaller side


@dataclass(frozen=True)
class RunEdge:
    """A run needing named capabilities starts (+1) or ends (-1) on a node; kept in the order
    they happen, so an end and a start at the same instant count in their true order."""

    at_s: float  # simulated seconds
    node: str  # node id hex
    needs: tuple[str, ...]  # the capability names the job needs a slot of
    delta: int


@dataclass
class JobFacts:
    job_hex: str
    submitter: str  # node id hex
    submitted_ms: int
    replicas: int = 1
    present: bool = False  # in the final document
    runs: dict[str, RunReport] = field(default_factory=dict)  # node hex -> its run record

    @property
    def final(self) -> bool:
        return sum(r.state in FINAL_STATES for r in self.runs.values()) >= self.replicas

    def succeeded_on(self) -> list[str]:
        return sorted(n for n, r in self.runs.items() if r.state == SUCCEEDED)


@dataclass
class FinalFacts:
    jobs: dict[str, JobFacts]
    up: set[str]  # node ids (hex) of the machines up at the end
    capable_survivor: bool
    documents: dict[str, tuple]  # node hex -> (state vector as sorted items, content digest)
    partitions: list[PartitionSpan]
    orphan_claims: list[tuple[str, str]]  # (node hex, job hex): active claim, nothing running
    lost_state_ms: dict[str, list[int]] = field(
        default_factory=dict
    )  # node hex -> when its state dir was lost
    names: dict[str, str] = field(default_factory=dict)  # node hex -> "n17" for messages
    run_edges: list[RunEdge] = field(default_factory=list)
    offered: dict[str, Mapping[str, int]] = field(default_factory=dict)  # node hex -> name -> max


def _name(facts: FinalFacts, node_hex: str) -> str:
    return facts.names.get(node_hex, node_hex[:12])


def every_job_final(facts: FinalFacts) -> list[str]:
    if not facts.capable_survivor:
        return []
    violations = []
    for job in facts.jobs.values():
        if job.final:
            continue
        if not job.present:
            if not submitter_lost_it(facts, job):
                violations.append(
                    f"job {job.job_hex[:12]} was accepted by {_name(facts, job.submitter)}, which is up, "
                    "but is not in the final document"
                )
            continue  # lost with its submitter: reported, not a protocol violation
        runs = (
            ", ".join(
                f"{_name(facts, n)} {r.state} (attempt {r.attempt}, {'up' if n in facts.up else 'down'})"
                for n, r in sorted(job.runs.items())
            )
            or "no run records"
        )
        violations.append(f"job {job.job_hex[:12]} never reached a final state: {runs}")
    return violations


def submitter_lost_it(facts: FinalFacts, job: JobFacts) -> bool:
    """The submitter is down for good, or lost its state dir after accepting the job."""
    return job.submitter not in facts.up or any(
        t >= job.submitted_ms for t in facts.lost_state_ms.get(job.submitter, ())
    )


def lost_with_submitter(facts: FinalFacts) -> list[str]:
    return sorted(j.job_hex for j in facts.jobs.values() if not j.present and submitter_lost_it(facts, j))


def separated(facts: FinalFacts, a: str, b: str, start_ms: int, end_ms: int) -> bool:
    """Were a and b on different sides of a partition at some point in [start_ms, end_ms]?"""
    return any(
        p.start_ms <= end_ms and p.end_ms >= start_ms and ((a in p.minority) != (b in p.minority))
        for p in facts.partitions
    )


def duplicate_successes(facts: FinalFacts) -> tuple[list[str], list[str]]:
    """(unexplained, explained by a partition) duplicate successes, one line per job."""
    unexplained, explained = [], []
    for job in facts.jobs.values():
        winners = job.succeeded_on()
        if len(winners) <= job.replicas:
            continue
        finished = max(job.runs[n].finished_ms or job.runs[n].updated_ms for n in winners)
        pairs = [(a, b) for i, a in enumerate(winners) for b in winners[i + 1 :]]
        names = ", ".join(_name(facts, n) for n in winners)
        if all(separated(facts, a, b, job.submitted_ms, finished) for a, b in pairs):
            explained.append(f"job {job.job_hex[:12]} succeeded on {names} (a partition separated them)")
        else:
            unexplained.append(
                f"job {job.job_hex[:12]} succeeded on {len(winners)} nodes ({names}) "
                f"but asked for {job.replicas}, and no partition separated them"
            )
    return unexplained, explained


def no_duplicate_success(facts: FinalFacts) -> list[str]:
    return duplicate_successes(facts)[0]


def documents_identical(facts: FinalFacts) -> list[str]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    for node_hex, shape in sorted(facts.documents.items()):
        groups[shape].append(_name(facts, node_hex))
    if len(groups) <= 1:
        return []
    ranked = sorted(groups.values(), key=len, reverse=True)
    return [
        f"{len(groups)} different documents among {len(facts.documents)} live nodes; "
        f"the largest group has {len(ranked[0])}, the others: "
        + "; ".join(", ".join(g[:10]) + (" ..." if len(g) > 10 else "") for g in ranked[1:5])
    ]


def no_dead_claims(facts: FinalFacts) -> list[str]:
    violations = []
    for job in facts.jobs.values():
        if job.final:
            continue
        for node_hex, run in sorted(job.runs.items()):
            if run.state in ACTIVE_STATES and node_hex not in facts.up:
                violations.append(
                    f"job {job.job_hex[:12]} is still {run.state} by {_name(facts, node_hex)}, "
                    "which is down, and nobody took it over"
                )
    return violations


def claims_backed(facts: FinalFacts) -> list[str]:
    return [
        f"{_name(facts, n)} holds an active claim on job {j[:12]} but is not running it"
        for n, j in sorted(facts.orphan_claims)
    ]


def capability_peaks(facts: FinalFacts) -> dict[tuple[str, str], tuple[int, float]]:
    """(node hex, capability) -> (most runs needing it at once on that node, first time reached)."""
    now: dict[tuple[str, str], int] = defaultdict(int)
    peaks: dict[tuple[str, str], tuple[int, float]] = {}
    for edge in facts.run_edges:
        for name in edge.needs:
            key = (edge.node, name)
            now[key] += edge.delta
            if now[key] > peaks.get(key, (0, 0.0))[0]:
                peaks[key] = (now[key], edge.at_s)
    return peaks


def capability_slots(facts: FinalFacts) -> list[str]:
    violations = []
    for (node_hex, name), (peak, at_s) in sorted(capability_peaks(facts).items()):
        limit = facts.offered.get(node_hex, {}).get(name, 0)
        if peak > limit:
            violations.append(
                f"{_name(facts, node_hex)} ran {peak} job{'' if peak == 1 else 's'} needing {name} "
                f"at once at {at_s:.3f} s, "
                f"but offers {limit} slot{'' if limit == 1 else 's'}"
            )
    return violations


def check_all(facts: FinalFacts) -> dict[str, list[str]]:
    return {
        "every_job_final": every_job_final(facts),
        "no_duplicate_success": no_duplicate_success(facts),
        "documents_identical": documents_identical(facts),
        "no_dead_claims": no_dead_claims(facts),
        "claims_backed": claims_backed(facts),
        "capability_slots": capability_slots(facts),
    }
