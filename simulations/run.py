"""Deterministic simulation of a formnet cluster in one process (see README, "Simulation").

    python -m simulations.run --nodes 1000 --seconds 120 --seed 7 --report out/ [--jobs 5000]
        [--loss 0.01] [--latency 1ms..20ms] [--crash 5%] [--partition 30s@60s] [--policy hashed-xor]

Runs formd's Node and JobLoop for every node over the simulated network under trio's
MockClock, injects the faults, checks the invariants and writes report.json (+ PNG plots).
Exit status: 0 when every invariant holds, 1 when one breaks (each printed with why),
2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulations.sim import options as parse
from simulations.sim.options import FORMD, INJECTIONS, OptionError, SimOptions
from simulations.sim.report import broken
from simulations.sim.session import run_document_only, run_session, summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulations.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=50, help="simulated nodes")
    p.add_argument(
        "--seconds", default="60s", help="length of the active phase (workload and faults), simulated"
    )
    p.add_argument("--seed", type=int, default=1, help="everything random is drawn from this")
    p.add_argument("--report", type=Path, default=None, help="directory for report.json and the plots")
    p.add_argument("--jobs", type=int, default=0, help="jobs submitted during the active phase")
    p.add_argument("--job-duration", default="1s..10s", help="simulated run time of a job, LOW..HIGH")
    p.add_argument(
        "--job-cpu", default="250m,500m,1,2", help="CPU requests, one picked per job (nodes have 4 cores)"
    )
    p.add_argument(
        "--job-shards",
        type=int,
        default=1,
        help="submit each job as N shards (each shard is checked as a job)",
    )
    p.add_argument(
        "--capabilities",
        default=None,
        metavar="NAME=MAX,...",
        help="named capabilities with their max_concurrency, e.g. inference:llama3=1,video:h264=2",
    )
    p.add_argument("--capability-nodes", default="0", help="nodes offering --capabilities: 30%% or a count")
    p.add_argument(
        "--capability-jobs", default="0%", help="share of the jobs that need one of --capabilities"
    )
    p.add_argument("--policy", default="hashed-xor", choices=("hashed-xor", "xor"), help="placement policy")
    p.add_argument("--loss", default="0", help="share of messages lost, e.g. 0.01 or 1%%")
    p.add_argument("--latency", default="1ms..20ms", help="one-way latency, LOW..HIGH (uniform) or one value")
    p.add_argument(
        "--no-seal",
        action="store_true",
        help="skip sealing frames (faster; bytes then lack the 45-byte frame overhead)",
    )
    p.add_argument("--crash", default="0", help="nodes killed (kill -9) during the run: 5%% or a count")
    p.add_argument("--restart", default="50%", help="share of the crashed nodes that restart")
    p.add_argument(
        "--restart-after", default="30s", help="how long a crashed node stays down before restarting"
    )
    p.add_argument(
        "--wipe",
        default="0%",
        help="share of restarts that come back with an empty state dir (so a new key: a new node)",
    )
    p.add_argument(
        "--wipe-keeps-key",
        action="store_true",
        help="wiped restarts keep their key: same node id, incarnation from 1",
    )
    p.add_argument(
        "--partition",
        action="append",
        default=[],
        metavar="DURATION@START[/SHARE]",
        help="split the network, e.g. 30s@60s (repeatable; SHARE is the smaller side, default 0.5)",
    )
    p.add_argument("--slow", default="0", help="slow nodes: 2%% or a count")
    p.add_argument("--slow-latency", default="200ms", help="added to every message to or from a slow node")
    p.add_argument(
        "--slow-factor",
        type=float,
        default=3.0,
        help="a slow node's tick and gossip run this many times slower",
    )
    p.add_argument(
        "--gossip-interval", default=f"{FORMD.gossip_interval_ms}ms", help="formd gossip_interval_ms"
    )
    p.add_argument("--fanout", type=int, default=FORMD.gossip_fanout, help="formd gossip_fanout")
    p.add_argument("--tick", default=f"{FORMD.tick_interval_ms}ms", help="formd tick_interval_ms (heartbeat)")
    p.add_argument(
        "--anti-entropy", default=f"{FORMD.anti_entropy_interval_s:g}s", help="formd anti_entropy_interval_s"
    )
    p.add_argument("--retransmit-mult", type=int, default=FORMD.retransmit_mult, help="formd retransmit_mult")
    p.add_argument(
        "--heartbeat-retransmit-mult",
        type=int,
        default=FORMD.heartbeat_retransmit_mult,
        help="formd heartbeat_retransmit_mult",
    )
    p.add_argument(
        "--quiet",
        default="15s",
        help="start of the active phase without jobs or faults (steady traffic, probes)",
    )
    p.add_argument("--probes", type=int, default=5, help="label changes timed during the quiet part")
    p.add_argument(
        "--settle", default="120s", help="after the active phase, at most this long for jobs to finish"
    )
    p.add_argument(
        "--join-over",
        default=None,
        help="start the nodes spread over this long (default 5 ms per node; at once with --warm-start)",
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="start from a cluster that formed earlier (every node holds every record): skips the join storm",
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="also time convergence at these sizes (no jobs, no faults), e.g. 10,100,1000",
    )
    p.add_argument(
        "--compare-policies",
        action="store_true",
        help="run the same seed again with the other placement policy; placement_by_policy in report.json",
    )
    p.add_argument(
        "--doc-hours", default="0", help="also run the document-only heartbeat simulation this long, e.g. 24h"
    )
    p.add_argument(
        "--doc-nodes", type=int, default=100, help="writers in the document-only heartbeat simulation"
    )
    p.add_argument(
        "--doc-only",
        action="store_true",
        help="run only the document-only heartbeat simulation (document_growth.json)",
    )
    p.add_argument(
        "--progress", action="store_true", help="print simulated and real time every simulated second"
    )
    p.add_argument("--no-plots", action="store_true", help="write report.json only")
    p.add_argument(
        "--inject",
        action="append",
        default=[],
        choices=INJECTIONS,
        help="break an invariant on purpose (to see the checker fail)",
    )
    return p


def to_options(args: argparse.Namespace) -> SimOptions:
    doc_hours = (
        parse.duration(
            args.doc_hours if args.doc_hours[-1:].isalpha() else args.doc_hours + "h", "--doc-hours"
        )
        / 3600
    )
    return SimOptions(
        nodes=args.nodes,
        seconds=parse.duration(args.seconds, "--seconds"),
        seed=args.seed,
        report_dir=args.report,
        jobs=args.jobs,
        job_duration=parse.duration_range(args.job_duration, "--job-duration"),
        job_cpu=parse.cpu_choices(args.job_cpu),
        job_shards=args.job_shards,
        capabilities=parse.named_capabilities(args.capabilities) if args.capabilities else (),
        capability_nodes=parse.amount(args.capability_nodes, "--capability-nodes"),
        capability_jobs=parse.percentage(args.capability_jobs, "--capability-jobs"),
        policy=args.policy,
        loss=parse.probability(args.loss, "--loss"),
        latency=parse.latency_range(args.latency),
        seal=not args.no_seal,
        crash=parse.amount(args.crash, "--crash"),
        restart=parse.percentage(args.restart, "--restart"),
        restart_after=parse.duration(args.restart_after, "--restart-after"),
        wipe=parse.percentage(args.wipe, "--wipe"),
        wipe_keeps_key=args.wipe_keeps_key,
        partitions=tuple(parse.partition(text) for text in args.partition),
        slow=parse.amount(args.slow, "--slow"),
        slow_latency=parse.duration(args.slow_latency, "--slow-latency"),
        slow_factor=args.slow_factor,
        gossip_interval=parse.duration(args.gossip_interval, "--gossip-interval"),
        fanout=args.fanout,
        tick_interval=parse.duration(args.tick, "--tick"),
        anti_entropy_interval=parse.duration(args.anti_entropy, "--anti-entropy"),
        retransmit_mult=args.retransmit_mult,
        heartbeat_retransmit_mult=args.heartbeat_retransmit_mult,
        quiet=parse.duration(args.quiet, "--quiet"),
        probes=args.probes,
        settle=parse.duration(args.settle, "--settle"),
        join_over=parse.duration(args.join_over, "--join-over") if args.join_over else None,
        warm_start=args.warm_start,
        sizes=parse.sizes(args.sizes) if args.sizes else (),
        compare_policies=args.compare_policies,
        doc_hours=doc_hours,
        doc_nodes=args.doc_nodes,
        doc_only=args.doc_only,
        progress=args.progress,
        plots=not args.no_plots,
        inject=tuple(args.inject),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        options = to_options(args)
    except OptionError as exc:
        print(f"simulations.run: {exc}", file=sys.stderr)
        return 2
    if options.doc_only:
        growth = run_document_only(options)["document_growth"]
        print(
            f"document: {growth['size_bytes_final']} bytes after {growth['hours']:g} h of {growth['nodes']} nodes' "
            f"heartbeats (goal {growth['goal_bytes']})"
        )
        return 0
    report, ok = run_session(options)
    for line in summary(report):
        print(line)
    for line in broken(report):
        print(line, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
