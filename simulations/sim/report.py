"""From a finished run to report.json's sections (pure: no I/O, no wall clock here).

Every figure is in simulated time and derived from the run alone, so the same seed gives
the same report; what the simulation cost in real time is added separately (`cost`).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict
from typing import Any

from daemon.cluster.membership import MembershipConfig
from pack_manager.jobstate import CANCELLED, DECLINED, FAILED, FINAL_STATES, SUCCEEDED, TIMED_OUT, YIELDED
from pack_manager.placement import POLICIES, top_k
from simulations.loopback.measure import spread, summarise

from .facts import to_ms
from .invariants import CHECKS, capability_peaks, duplicate_successes, lost_with_submitter
from .run_record import RunRecord
from .workload import FAILING_SHARE
from .world import EPOCH

GOAL_BYTES_PER_S = 300_000 / 8  # 300 kbps per node
KEPT_VIOLATIONS = 20


def r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "samples": 0}
    ordered = sorted(values)
    pick = lambda share: ordered[max(0, math.ceil(share * len(ordered)) - 1)]  # noqa: E731
    return {"p50": r4(pick(0.5)), "p99": r4(pick(0.99)), "max": r4(ordered[-1]), "samples": len(ordered)}


def options_section(run: RunRecord) -> dict[str, Any]:
    options = asdict(run.options)
    options["report_dir"] = None  # where it was written is not part of what was simulated
    options["crash"], options["slow"] = str(run.options.crash), str(run.options.slow)
    return options


def convergence(run: RunRecord) -> dict[str, Any]:
    changes = []
    for probe in run.recorder.probes:
        figures = spread({str(i): probe.seen.get(i) for i in sorted(probe.observers)})
        changes.append(
            {"from": f"n{probe.target.index}", "at_s": r4(probe.started - run.active_start), **figures}
        )
    summary = summarise(changes)
    summary.pop("poll_interval_s", None)  # the simulation notes exact times, it does not poll
    summary["method"] = "label change on one node; exact simulated time each other live node first holds it"
    return summary


def traffic(run: RunRecord) -> dict[str, Any]:
    assert run.world is not None
    stats = run.world.network.stats
    steady = None
    if run.steady_bytes is not None:
        since, until, sent, nodes = run.steady_bytes
        steady = sent / max(1, nodes) / (until - since) if until > since else None
    overall = [value for _, value in run.traffic]
    return {
        "bytes_per_node_per_s_steady": r4(steady),
        "kbps_per_node_steady": r4(steady * 8 / 1000) if steady is not None else None,
        "goal_kbps_per_node": 300,
        "steady_window_s": [r4(run.steady_bytes[0]), r4(run.steady_bytes[1])] if run.steady_bytes else None,
        "bytes_per_node_per_s_active_mean": r4(statistics.fmean(overall)) if overall else None,
        "bytes_per_node_per_s_active_max": r4(max(overall)) if overall else None,
        "series": [[t, r4(v)] for t, v in run.traffic],
        "messages_sent": stats.sent,
        "messages_delivered": stats.delivered,
        "messages_lost": stats.lost,
        "messages_blocked": stats.blocked,
        "sealed_frames": run.options.seal,
    }


def _job_state(runs: dict) -> str | None:
    states = {r.state for r in runs.values()}
    for state in (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED):
        if state in states:
            return state
    return None


def jobs(run: RunRecord) -> dict[str, Any]:
    facts = run.facts
    assert facts is not None
    finals = Counter(_job_state(job.runs) for job in facts.jobs.values())
    unexplained, explained = duplicate_successes(facts)
    all_runs = [r for job in facts.jobs.values() for r in job.runs.values()]
    durations = []
    for job in facts.jobs.values():
        done = [r.finished_ms for r in job.runs.values() if r.state in FINAL_STATES and r.finished_ms]
        if done:
            durations.append((min(done) - job.submitted_ms) / 1000)
    unfinished = sum(1 for job in facts.jobs.values() if not job.final)
    return {
        "submitted": len(facts.jobs),
        "succeeded": finals[SUCCEEDED],
        "failed": finals[FAILED],
        "timed_out": finals[TIMED_OUT],
        "cancelled": finals[CANCELLED],
        "lost": unfinished,
        "lost_with_submitter": len(lost_with_submitter(facts)),
        "not_accepted": run.not_accepted,
        "duplicates": len(unexplained),
        "duplicates_explained_by_partition": len(explained),
        "reassignments": sum(1 for r in all_runs if r.attempt > 1),
        "yields": sum(1 for r in all_runs if r.state == YIELDED),
        "declines_standing": sum(1 for r in all_runs if r.state == DECLINED),
        "submit_to_final_s": quantiles(durations),
        "planned_failures_share": FAILING_SHARE,
    }


def capabilities(run: RunRecord) -> dict[str, Any]:
    """Per named capability: its max_concurrency, the most runs needing it at once on one node,
    the runs that needed it and the nodes offering it."""
    facts = run.facts
    assert facts is not None
    peaks = capability_peaks(facts)
    section = {}
    for name, limit in run.options.capabilities:
        section[name] = {
            "max_concurrency": limit,
            "peak_on_one_node": max((p for (_, n), (p, _) in peaks.items() if n == name), default=0),
            "runs": sum(1 for e in facts.run_edges if e.delta > 0 and name in e.needs),
            "jobs_needing": sum(1 for s in run.submitted if s.plan.capability == name),
            "nodes": run.options.capability_nodes.of(run.options.nodes),
        }
    return section


def placement(run: RunRecord) -> dict[str, Any]:
    facts, world = run.facts, run.world
    assert facts is not None and world is not None
    wins = Counter(n for job in facts.jobs.values() for n in job.succeeded_on())
    ids = [i.node_id for m in world.machines for i in m.identities]  # a wiped restart is a new node
    counts = [wins[i.hex()] for i in ids]
    ranked = {}
    for policy in POLICIES:
        top = Counter(top_k(bytes.fromhex(job), ids, 1, policy)[0] for job in facts.jobs)
        ranked[policy] = _evenness([top[i] for i in ids])
    return {
        "policy": run.options.policy,
        **_evenness(counts),
        "top_ranked_by_policy": ranked,
        "note": "actual: succeeded runs per node (capacity declines and failover included); "
        "top_ranked_by_policy: how the same job ids rank over the same node ids",
    }


def _evenness(counts: list[int]) -> dict[str, Any]:
    total = sum(counts)
    mean = total / len(counts) if counts else 0
    histogram = Counter(counts)
    return {
        "max_over_mean": r4(max(counts) / mean) if mean else None,
        "min_over_mean": r4(min(counts) / mean) if mean else None,
        "mean": r4(mean),
        "histogram": {str(k): histogram[k] for k in sorted(histogram)},
    }


def _down_at(run: RunRecord, index: int, t: float) -> bool:
    return any(
        c.machine == index and c.at <= t < (c.restarted_at if c.restarted_at is not None else math.inf)
        for c in run.crashes
    )


def failure_detection(run: RunRecord) -> dict[str, Any]:
    world, facts = run.world, run.facts
    assert world is not None and facts is not None
    dead_times, rerun_times, crashes = [], [], []
    for crash in run.crashes:
        until = crash.restarted_at if crash.restarted_at is not None else run.end
        observers = [
            m.index
            for m in world.machines
            if m.index != crash.machine
            and not _down_at(run, m.index, crash.at)
            and not any(c.machine == m.index and crash.at <= c.at <= until for c in run.crashes)
        ]
        seen = [run.recorder.first_verdict("peer dead", crash.node_hex, o, crash.at) for o in observers]
        dead_s = None
        if observers and all(t is not None and t <= until for t in seen):
            dead_s = max(seen) - crash.at  # type: ignore[type-var]
            dead_times.append(dead_s)
        reruns = []
        for job_hex in crash.running:
            job = facts.jobs.get(job_hex)
            starts = [
                r.started_ms
                for n, r in (job.runs.items() if job else ())
                if n != crash.node_hex and r.started_ms >= to_ms(crash.at)
            ]
            if starts:
                reruns.append((min(starts) - to_ms(crash.at)) / 1000)
        rerun_times.extend(reruns)
        crashes.append(
            {
                "node": f"n{crash.machine}",
                "at_s": r4(crash.at - run.active_start),
                "restarted_at_s": r4(crash.restarted_at - run.active_start) if crash.restarted_at else None,
                "wiped": crash.wiped,
                "dead_everywhere_s": r4(dead_s),
                "jobs_running": len(crash.running),
                "running_elsewhere_s": [r4(v) for v in reruns],
            }
        )
    config = MembershipConfig(run.options.tick_interval)
    return {
        "dead_everywhere_s": quantiles(dead_times),
        "job_running_elsewhere_s": quantiles(rerun_times),
        # Probes' suspicions decide (daemon/cluster/membership.py); heartbeat silence is the backstop.
        "expected_dead_timeout_s": r4(config.suspicion_timeout(run.options.nodes)),
        "backstop_dead_timeout_s": r4(config.dead_timeout(run.options.nodes)),
        "crashes": crashes,
    }


def document(run: RunRecord) -> dict[str, Any]:
    return {
        "size_bytes_final": run.doc_sizes[-1][1] if run.doc_sizes else None,
        "size_bytes_series": [[t, size] for t, size in run.doc_sizes],
    }


def invariants(run: RunRecord) -> dict[str, Any]:
    return {
        name: {
            "ok": not run.violations.get(name),
            "count": len(run.violations.get(name, [])),
            "violations": run.violations.get(name, [])[:KEPT_VIOLATIONS],
        }
        for name in CHECKS
    }


def faults(run: RunRecord) -> dict[str, Any]:
    return {
        "crashes": len(run.crashes),
        "restarts": sum(1 for c in run.crashes if c.restarted_at is not None),
        "wiped_restarts": sum(1 for c in run.crashes if c.wiped and c.restarted_at is not None),
        "partitions": [
            {"start_s": r4(s - run.active_start), "end_s": r4(e - run.active_start), "minority": len(m)}
            for s, e, m in run.partitions
        ],
        "slow_nodes": [f"n{i}" for i in run.plan.slow],
        "injected": run.injected,
    }


def build(run: RunRecord) -> dict[str, Any]:
    """report.json without its `cost` section."""
    conv = convergence(run)
    net = traffic(run)
    sections = invariants(run)
    return {
        "options": options_section(run),
        "convergence": {k: conv[k] for k in ("p50_s", "p99_s", "all_s", "all_s_max", "samples")}
        | {"probes": conv["changes"], "method": conv["method"]},
        "bytes_per_node_per_s": net["bytes_per_node_per_s_steady"],
        "jobs": jobs(run),
        "capabilities": capabilities(run),
        "placement": placement(run),
        "invariants_ok": all(s["ok"] for s in sections.values()),
        "invariants": sections,
        "failure_detection": failure_detection(run),
        "traffic": net,
        "document": document(run),
        "faults": faults(run),
        "phases_s": {
            "joined_at": r4(run.joined_at),
            "active_start": r4(run.active_start),
            "settled_after_active_s": r4(max(0.0, run.settled_at - run.active_start - run.options.seconds))
            if run.settled_at
            else None,
            "converge_rounds": run.converge_rounds,
            "end": r4(run.end),
        },
        "log": {"warnings": dict(sorted(run.recorder.warnings.items())), "examples": run.recorder.examples},
        "wall_clock_epoch": EPOCH,
    }


def broken(report: dict[str, Any]) -> list[str]:
    """One line per violation, for the terminal."""
    lines = []
    for name, section in report["invariants"].items():
        for violation in section["violations"]:
            lines.append(f"INVARIANT BROKEN {name}: {violation}")
        if section["count"] > len(section["violations"]):
            lines.append(
                f"INVARIANT BROKEN {name}: ... and {section['count'] - len(section['violations'])} more"
            )
    return lines
