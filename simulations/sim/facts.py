"""Reading the end state of a run out of the simulated nodes, into invariants.FinalFacts."""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from crdt_state.document import MAP_NAMES, ClusterDocument
from crdt_state.state_vector import decode_state_vector
from metrics_agent.wire import WireError
from pack_manager.jobstate import RunReport

from .invariants import FinalFacts, JobFacts, PartitionSpan, RunEdge
from .workload import Submission
from .world import EPOCH, World


@dataclass(frozen=True)
class Submitted:
    job_hex: str
    plan: Submission
    machine: int  # the machine that accepted it
    submitter: str  # its node id (hex) then
    at_s: float  # simulated time of acceptance


def to_ms(simulated_s: float) -> int:
    """Simulated seconds -> the node wall-clock milliseconds run records carry."""
    return int((EPOCH + simulated_s) * 1000)


def document_shape(document: ClusterDocument) -> tuple:
    """(state vector, digest of every verified entry): equal shapes mean equal documents.
    The state vector is compared decoded, since its byte encoding is not canonical."""
    state_vector = tuple(sorted(decode_state_vector(document.state_vector()).items()))
    digest = blake3.blake3()
    for map_name in MAP_NAMES:
        for key, entry in sorted(document.items(map_name).items()):
            for part in (map_name.encode(), key.encode(), entry.envelope):
                digest.update(len(part).to_bytes(4, "big") + part)
    return state_vector, digest.hexdigest()


def orphan_claims(world: World) -> list[tuple[str, str]]:
    """(node, job) for every active claim a live node holds in its own document without
    running the job: a claim nobody will ever finish."""
    orphans = []
    for machine in world.up():
        assert machine.node is not None and machine.loop is not None
        suffix = ":" + machine.identity.node_hex
        for key, entry in machine.node.document.items("runs").items():
            if not key.endswith(suffix):
                continue
            try:
                report = RunReport.from_wire(entry.body)
            except WireError:
                continue
            job_hex = key.partition(":")[0]
            if report.active and job_hex not in machine.loop.running:
                orphans.append((machine.identity.node_hex, job_hex))
    return orphans


def runs_by_job(document: ClusterDocument) -> dict[str, dict[str, RunReport]]:
    runs: dict[str, dict[str, RunReport]] = {}
    for key, entry in document.items("runs").items():
        job_hex, _, node_hex = key.partition(":")
        try:
            runs.setdefault(job_hex, {})[node_hex] = RunReport.from_wire(entry.body)
        except WireError:
            continue
    return runs


def collect(
    world: World,
    submitted: list[Submitted],
    partitions: list[tuple[float, float, frozenset[str]]],
    orphans: list[tuple[str, str]],
    lost_state: dict[str, list[float]],
    run_edges: list[RunEdge],
) -> FinalFacts:
    up = world.up()
    reference = up[0].node.document if up else None
    runs = runs_by_job(reference) if reference is not None else {}
    jobs = {}
    for item in submitted:
        facts = JobFacts(item.job_hex, item.submitter, to_ms(item.at_s))
        if reference is not None:
            facts.present = reference.get("jobs", item.job_hex) is not None
            facts.runs = runs.get(item.job_hex, {})
        jobs[item.job_hex] = facts
    spans = [PartitionSpan(to_ms(start), to_ms(end), minority) for start, end, minority in partitions]
    return FinalFacts(
        jobs=jobs,
        up={m.identity.node_hex for m in up},
        capable_survivor=bool(up),
        documents={m.identity.node_hex: document_shape(m.node.document) for m in up},
        partitions=spans,
        orphan_claims=orphans,
        lost_state_ms={node: [to_ms(t) for t in times] for node, times in lost_state.items()},
        names={i.node_hex: m.name(i) for m in world.machines for i in m.identities},
        run_edges=list(run_edges),
        offered={i.node_hex: world.capabilities_of(m).named for m in world.machines for i in m.identities},
    )
