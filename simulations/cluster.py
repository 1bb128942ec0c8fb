"""Loopback cluster harness: N real formd processes on 127.0.0.1, measured (and Serf beside them).

    python -m simulations.cluster --nodes 5 [--workload simulations/workloads/wasm-kill.toml]
        [--kill 2@10s] [--term 3@20s] [--restart 2@30s] [--serf] [--report DIR] [--keep]
        [--netns [--delay 50ms] [--loss 1%]]
        [--profile default|fast] [--set key=value ...] [--changes 5] [--steady 10s] [--drain 120s]

It starts N formd nodes (own state dirs, one cluster key, n0 the seed of all; with --netns each
on a host of its own, a network namespace, deployed with listen 0.0.0.0:7946, optionally with
delay and loss), waits until
every node's `form nodes --json` lists all N alive, measures a quiet cluster (bytes per node
per second over --steady, --changes label changes timed until every node shows them), runs the
workload file through `form` with the fault schedule (times are offsets from the start of that
phase), and prints a report; --report DIR writes DIR/report.json. With --serf it then kill -9s
one formd node of the quiet cluster, stops formd, starts N Serf agents and does the same tag
changes and kill -9 there, and prints formd/serf ratios. Every process is stopped at the end,
on an error and on Ctrl-C; the state root is removed unless --keep. Exit 0, 1 on a failed run,
2 on bad options, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from metrics_agent.units import UnitError, parse_duration

from .loopback.formd_cluster import PROFILES
from .loopback.harness import Harness, Options
from .loopback.summary import render
from .loopback.workload import WorkloadError, load_workload, parse_fault
from .netns.network import unavailable as netns_unavailable

MAX_NODES = 200


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=5, help="formd processes (and Serf agents) to start")
    parser.add_argument("--workload", type=Path, help="TOML workload file (see simulations/workloads/)")
    parser.add_argument(
        "--kill",
        action="append",
        default=[],
        metavar="NODE@TIME",
        help="kill -9 node NODE at TIME, e.g. 2@10s",
    )
    parser.add_argument(
        "--term", action="append", default=[], metavar="NODE@TIME", help="SIGTERM (graceful leave)"
    )
    parser.add_argument(
        "--restart", action="append", default=[], metavar="NODE@TIME", help="start a stopped node again"
    )
    parser.add_argument("--serf", action="store_true", help="compare with N Serf agents in the same run")
    parser.add_argument(
        "--netns",
        action="store_true",
        help="each formd node on a host of its own: a network namespace on a private bridge (root)",
    )
    parser.add_argument("--delay", default="0ms", help="with --netns: one-way delay on every connection")
    parser.add_argument("--loss", default="0%", help="with --netns: share of packets dropped, e.g. 1%%")
    parser.add_argument("--report", type=Path, metavar="DIR", help="write DIR/report.json")
    parser.add_argument("--keep", action="store_true", help="keep the state dirs and logs")
    parser.add_argument("--root", type=Path, help="where the state dirs go (default: a new temp dir)")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="formd timings: default (tick 1 s, gossip 200 ms x 3) or fast (test timings)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="formd.toml override, e.g. gossip_fanout=4",
    )
    parser.add_argument("--changes", type=int, default=5, help="label changes timed for convergence")
    parser.add_argument("--steady", default="10s", help="steady-state window for bytes per node per second")
    parser.add_argument("--drain", default="120s", help="how long to wait for submitted jobs to finish")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    """Check every option before anything starts; raises WorkloadError with the reason."""
    if not 2 <= args.nodes <= MAX_NODES:
        raise WorkloadError(f"--nodes must be from 2 to {MAX_NODES}")
    if not 1 <= args.changes <= 1000:
        raise WorkloadError("--changes must be from 1 to 1000")
    try:
        steady, drain = parse_duration(args.steady), parse_duration(args.drain)
    except UnitError as exc:
        raise WorkloadError(f"--steady/--drain: {exc}") from None
    if steady <= 0:
        raise WorkloadError("--steady must be more than 0")
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WorkloadError(f"--set {item!r}: write KEY=VALUE")
        settings[key.strip()] = value.strip()
    steps = load_workload(args.workload, args.nodes) if args.workload else []
    for do in ("kill", "term", "restart"):
        steps += [parse_fault(text, do, args.nodes) for text in getattr(args, do)]
    if args.netns and (reason := netns_unavailable()) is not None:
        raise WorkloadError(f"--netns: {reason}")
    delay_ms, loss = impairment(args)
    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise WorkloadError(f"--report {args.report}: not a directory")
    if args.root is not None and args.root.exists() and any(args.root.iterdir()):
        raise WorkloadError(f"--root {args.root}: not empty")
    return Options(
        nodes=args.nodes,
        profile=args.profile,
        settings=settings,
        changes=args.changes,
        steady_s=steady,
        steps=steps,
        workload=str(args.workload) if args.workload else None,
        drain_s=drain,
        serf=args.serf,
        netns=args.netns,
        delay_ms=delay_ms,
        loss=loss,
        keep=args.keep,
        root=args.root,
        say=lambda text: print(text, flush=True),
    )


def impairment(args: argparse.Namespace) -> tuple[float, float]:
    """--delay and --loss as milliseconds and a probability; only hosts of their own have them."""
    try:
        delay_ms = parse_duration(args.delay) * 1000
    except UnitError as exc:
        raise WorkloadError(f"--delay: {exc}") from None
    text = args.loss.strip()
    try:
        loss = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise WorkloadError(f"--loss {args.loss!r}: write a share such as 1% or 0.01") from None
    if not 0 <= loss < 1:
        raise WorkloadError("--loss must be from 0% to below 100%")
    if (delay_ms or loss) and not args.netns:
        raise WorkloadError("--delay and --loss need --netns (127.0.0.1 cannot be impaired)")
    return delay_ms, loss


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = options_from(args)
    except WorkloadError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP end the run like Ctrl-C: the finally blocks stop every process first.
    # SIGINT too, explicitly: a shell starts background commands with SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler, so the harness ignored Ctrl-C.
    previous = {
        signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    harness = Harness(options)
    try:
        report = harness.run()
    except KeyboardInterrupt:
        print(
            f"cluster: interrupted; every process stopped ({harness.report.get('shutdown')})", file=sys.stderr
        )
        return 130
    except Exception as exc:  # the run failed; processes were stopped by the finally block
        detail = (
            f": {exc.stderr.strip()}" if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else ""
        )
        print(
            f"cluster: run failed: {type(exc).__name__}: {exc}{detail} (shutdown: {harness.report.get('shutdown')})",
            file=sys.stderr,
        )
        write_report(args.report, harness.report)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(render(report), flush=True)
    write_report(args.report, report)
    return 0


def write_report(directory: Path | None, report: dict) -> None:
    """report.json, also after a failed run (then with the phases that completed, and `error`)."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {directory / 'report.json'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
