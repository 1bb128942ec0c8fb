"""The report of a loopback run as text for a terminal (report.json holds the same figures)."""

from __future__ import annotations

from typing import Any


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _shares(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    return f"50% {_ms(figures['p50_s'])}, 99% {_ms(figures['p99_s'])}, all {_ms(figures['all_s'])}"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['harness']} cluster: {report['nodes']} formd nodes "
        f"{'on hosts of their own' if report['harness'] == 'netns' else 'on 127.0.0.1'}, "
        f"profile {report['profile']} "
        f"(tick {report['settings']['tick_interval_ms']} ms, gossip {report['settings']['gossip_interval_ms']} ms "
        f"x {report['settings']['gossip_fanout']}); {report['machine']['cpus']} CPUs, load "
        f"{report['machine']['load_avg_at_start']}"
    ]
    if report.get("network"):
        network = report["network"]
        lines[0] += f"; {network['subnet']}, delay {network['delay_ms']:g} ms, loss {network['loss']:.1%}"
    if "started_s" in report:
        lines.append(f"  start -> all alive everywhere: {report['started_s']:.2f} s")
    if "convergence" in report:
        conv = report["convergence"]
        lines.append(
            f"  label change seen by (median of {conv['samples']}): {_shares(conv)}; worst all {_ms(conv['all_s_max'])}"
        )
    if "bytes" in report:
        b = report["bytes"]
        lines.append(
            f"  steady state: {b['sent_per_node_per_s'] / 1024:.2f} KiB/s sent per node (max "
            f"{b['sent_max_node_per_s'] / 1024:.2f}), "
            f"{b['received_per_node_per_s'] / 1024:.2f} KiB/s received, over {b['window_s']} s"
        )
    for kind, key in (("kill", "dead"), ("term", "left"), ("restart", "alive")):
        for entry in report.get("failure_detection", {}).get(kind, []):
            extra = f"; suspected: {_shares(entry.get('suspect'))}" if kind == "kill" else ""
            when = "for the comparison" if entry.get("comparison") else f"at {entry['at_s']:.1f} s"
            lines.append(
                f"  {kind} {entry['node']} {when} -> {key} on the others: {_shares(entry.get(key))}{extra}"
            )
    for entry in (report.get("workload") or {}).get("label_changes", []):
        lines.append(
            f"  workload label change on {entry['node']} (from `form label set`, CLI start included): {_shares(entry)}"
        )
    jobs = report.get("jobs")
    if jobs:
        lines.append(
            f"  jobs: {jobs['submitted']} submitted, {jobs['succeeded']} succeeded, {jobs['failed']} failed, "
            f"{jobs['lost']} lost, {jobs['duplicates']} duplicates, {jobs['disagreements']} disagreements, "
            f"{jobs['submit_errors']} submissions refused (drained in {jobs['drain_s']} s)"
        )
    serf = report.get("serf")
    if serf:
        lines.append(
            f"serf: {serf['nodes']} agents (lan profile, encrypted): start -> all alive {serf['started_s']:.2f} s"
        )
        lines.append(
            f"  tag change seen by (median of {serf['convergence']['samples']}): {_shares(serf['convergence'])}"
        )
        for entry in serf["failure_detection"]["kill"]:
            lines.append(f"  kill {entry['node']} -> failed on the others: {_shares(entry['failed'])}")
    comparison = report.get("comparison")
    if comparison:
        lines.append("formd / serf:")
        for key, text in (
            ("label_change_p50_s", "change seen by 50%"),
            ("label_change_all_s", "change seen by all"),
            ("kill_detected_all_s", "kill -9 -> dead/failed on all"),
        ):
            item = comparison[key]
            ratio = "-" if item["ratio"] is None else f"{item['ratio']:.2f}x"
            lines.append(
                f"  {text:32s} formd {_ms(item['formd']):>9s}  serf {_ms(item['serf']):>9s}  ratio {ratio}"
            )
        lines.append(f"  why: formd: {comparison['explanation']['formd']}")
        lines.append(f"       serf: {comparison['explanation']['serf']}")
    shutdown = report.get("shutdown", {})
    if shutdown:
        lines.append(
            f"shutdown: formd {shutdown.get('formd')}"
            + (f", serf {shutdown['serf']}" if "serf" in shutdown else "")
            + f"; {shutdown.get('left_behind')} process(es) left behind"
            + (f"; state kept in {shutdown['kept']}" if shutdown.get("kept") else "; state removed")
        )
    return "\n".join(lines)
