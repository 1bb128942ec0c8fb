"""One `python -m simulations.run` invocation: the main run, the optional size sweep and
document-growth run, report.json and the plots.

Each simulated run gets a fresh MockClock(autojump_threshold=0), trio's scheduler seeded
(determinism.py), the shared signature cache (shared_verify.py), shared placement orders
(shared_placement.py) and a temporary directory
for the machines' blob stores and work dirs, removed afterwards.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import trio
import trio.testing

from pack_manager.placement import POLICIES
from simulations.loopback.harness import code_version

from . import report as sections
from .determinism import deterministic_trio
from .gc_cost import GcTimer
from .heartbeat_doc import heartbeat_growth
from .options import NONE, SimOptions
from .run_record import RunRecord
from .scenario import simulate
from .shared_placement import SharedOrders
from .shared_verify import SharedCache


def simulate_once(options: SimOptions) -> tuple[RunRecord, dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory(prefix="formnet-sim-") as scratch,
        deterministic_trio(options.seed),
        GcTimer() as gc_timer,
    ):
        cache, orders = SharedCache(), SharedOrders()
        started, cpu_started = time.perf_counter(), time.process_time()
        run = trio.run(
            simulate,
            options,
            Path(scratch),
            cache.openers,
            orders.order_nodes,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        real, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        gc_figures = gc_timer.figures()
    simulated = run.end
    cost = {
        "real_s": round(real, 3),
        "cpu_s": round(cpu, 3),  # this process only: the figure to trust on a busy machine
        "node_simulated_s_per_cpu_s": round(options.nodes * simulated / cpu, 2) if cpu > 0 else None,
        "simulated_s": round(simulated, 3),
        "node_simulated_s_per_real_s": round(options.nodes * simulated / real, 2) if real > 0 else None,
        "real_s_per_phase": {phase: round(seconds, 3) for phase, seconds in run.real_s.items()},
        "shared_verify": {"hits": cache.hits, "misses": cache.misses},
        "shared_placement": {"hits": orders.hits, "misses": orders.misses},
        **gc_figures,
    }
    return run, cost


def placement_figures(report: dict[str, Any]) -> dict[str, Any]:
    """One policy's line of placement_by_policy: how the jobs actually run spread over the nodes."""
    placement, jobs = report["placement"], report["jobs"]
    return {
        **{k: placement[k] for k in ("max_over_mean", "min_over_mean", "mean", "histogram")},
        **{
            k: jobs[k]
            for k in ("submitted", "succeeded", "lost", "duplicates", "reassignments", "declines_standing")
        },
        "invariants_ok": report["invariants_ok"],
    }


def compare_policies(
    options: SimOptions, report: dict[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """The same seed (same nodes, jobs and faults) under every other placement policy."""
    by_policy, costs = {options.policy: placement_figures(report)}, {}
    for policy in POLICIES:
        if policy == options.policy:
            continue
        say(f"  the same run with --policy {policy} ...")
        other_run, costs[policy] = simulate_once(
            replace(options, policy=policy, sizes=(), doc_hours=0.0, compare_policies=False, report_dir=None)
        )
        by_policy[policy] = placement_figures(sections.build(other_run))
    return {"by_policy": by_policy, "cost": costs}


def convergence_only(options: SimOptions, nodes: int) -> SimOptions:
    """The same network and settings at another size, with no jobs and no faults."""
    return replace(
        options,
        nodes=nodes,
        jobs=0,
        crash=NONE,
        slow=NONE,
        partitions=(),
        inject=(),
        sizes=(),
        doc_hours=0.0,
        seconds=options.quiet,
        settle=0.0,
        report_dir=None,
    )


def document_growth(options: SimOptions, say: Callable[[str], None]) -> tuple[dict[str, Any], float]:
    say(f"  document growth: {options.doc_nodes} nodes x {options.doc_hours:g} h of heartbeats ...")
    growth = heartbeat_growth(options.doc_nodes, options.doc_hours, options.seed, options.tick_interval)
    return growth, round(growth.pop("real_s"), 3)


def run_document_only(options: SimOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """`--doc-only`: document_growth.json (+ its plot), no network simulation."""
    growth, real = document_growth(options, say)
    report = {
        "document_growth": growth,
        "cost": {"document_growth_real_s": real, "python": platform.python_version()},
    }
    if options.report_dir is not None:
        options.report_dir.mkdir(parents=True, exist_ok=True)
        (options.report_dir / "document_growth.json").write_text(
            json.dumps(report, indent=2) + "\n", encoding="utf-8"
        )
        if options.plots:
            from .plots import write_plots  # noqa: PLC0415

            write_plots(report, options.report_dir)
    return report


def run_session(options: SimOptions, say: Callable[[str], None] = print) -> tuple[dict[str, Any], bool]:
    say(f"simulating {options.nodes} nodes for {options.seconds:g} s (seed {options.seed}) ...")
    code = code_version()  # at the start: a long run may outlive the commit it ran
    run, cost = simulate_once(options)
    report = sections.build(run)
    report["cost"] = cost
    say(
        f"  done in {cost['real_s']:.1f} s real ({cost['node_simulated_s_per_real_s']} "
        "node-simulated-seconds per real second)"
    )
    if options.sizes:
        by_size, size_cost = {}, {}
        for nodes in options.sizes:
            if nodes == options.nodes:
                sized, sized_cost = report, {"real_s": "the main run's"}
            else:
                say(f"  convergence at {nodes} nodes ...")
                sized_run, sized_cost = simulate_once(convergence_only(options, nodes))
                sized = sections.build(sized_run)
            by_size[str(nodes)] = {
                **{k: sized["convergence"][k] for k in ("p50_s", "p99_s", "all_s", "all_s_max", "samples")},
                "bytes_per_node_per_s": sized["bytes_per_node_per_s"],
            }
            size_cost[str(nodes)] = sized_cost
        report["convergence_by_size"] = by_size
        cost["by_size"] = size_cost
    if options.compare_policies:
        compared = compare_policies(options, report, say)
        report["placement_by_policy"], cost["by_policy"] = compared["by_policy"], compared["cost"]
    if options.doc_hours > 0:
        report["document_growth"], cost["document_growth_real_s"] = document_growth(options, say)
    cost["python"] = platform.python_version()
    cost["code"] = code  # the commit measured (and whether the tree differed from it)
    if options.report_dir is not None:
        write(report, options.report_dir, options.plots, say)
    ok = report["invariants_ok"] and all(
        f["invariants_ok"] for f in report.get("placement_by_policy", {}).values()
    )
    return report, ok


def write(report: dict[str, Any], directory: Path, plots: bool, say: Callable[[str], None]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    names = []
    if plots:
        from .plots import write_plots  # noqa: PLC0415 - matplotlib is optional and slow to import

        names = write_plots(report, directory)
    say(f"  wrote {directory / 'report.json'}" + (f" and {', '.join(names)}" if names else ""))


def summary(report: dict[str, Any]) -> list[str]:
    conv, jobs, placement = report["convergence"], report["jobs"], report["placement"]
    detection = report["failure_detection"]
    lines = [
        f"convergence (median of {conv['samples']} probes): 50% {conv['p50_s']} s, 99% {conv['p99_s']} s, "
        f"100% {conv['all_s']} s (worst {conv['all_s_max']} s)",
        f"traffic at steady state: {report['bytes_per_node_per_s']} B/s per node "
        f"({report['traffic']['kbps_per_node_steady']} kbps; goal 300)",
        f"jobs: {jobs['submitted']} submitted, {jobs['succeeded']} succeeded, {jobs['failed']} failed, "
        f"{jobs['lost']} lost ({jobs['lost_with_submitter']} with their submitter), {jobs['duplicates']} duplicates "
        f"(+{jobs['duplicates_explained_by_partition']} explained by a partition), "
        f"{jobs['reassignments']} reassignments",
        f"placement ({placement['policy']}): max/mean {placement['max_over_mean']}; top-ranked max/mean "
        + ", ".join(f"{p} {f['max_over_mean']}" for p, f in placement["top_ranked_by_policy"].items()),
        f"failure detection: dead everywhere p50 {detection['dead_everywhere_s']['p50']} s "
        f"(expected timeout {detection['expected_dead_timeout_s']} s); job running elsewhere p50 "
        f"{detection['job_running_elsewhere_s']['p50']} s",
    ]
    for name, figures in report.get("capabilities", {}).items():
        lines.append(
            f"capability {name}: at most {figures['peak_on_one_node']} at once on a node "
            f"(max_concurrency {figures['max_concurrency']}), {figures['runs']} runs of "
            f"{figures['jobs_needing']} jobs (shards) needing it, {figures['nodes']} nodes offer it"
        )
    if report["document"]["size_bytes_final"] is not None:
        lines.append(f"document: {report['document']['size_bytes_final']} bytes at the end")
    growth = report.get("document_growth")
    if growth:
        lines.append(
            f"document growth: {growth['size_bytes_final']} bytes after {growth['hours']:g} h of "
            f"{growth['nodes']} nodes' heartbeats (goal {growth['goal_bytes']})"
        )
    for size, figures in report.get("convergence_by_size", {}).items():
        lines.append(
            f"convergence at {size} nodes: 50% {figures['p50_s']} s, 99% {figures['p99_s']} s, 100% "
            f"{figures['all_s']} s"
        )
    for policy, figures in report.get("placement_by_policy", {}).items():
        lines.append(
            f"placement with {policy}: max/mean {figures['max_over_mean']} over {figures['succeeded']} succeeded runs, "
            f"{figures['duplicates']} duplicates, {figures['lost']} lost"
        )
    lines.append("invariants: " + ("all hold" if report["invariants_ok"] else "BROKEN"))
    return lines
