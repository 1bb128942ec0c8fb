"""PNG plots beside report.json (matplotlib, the `plots` extra). Each reads only the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GOAL_KBPS = 300
GOAL_DOC_MIB = 1.0


def write_plots(report: dict[str, Any], directory: Path) -> list[str]:
    """Write every plot the report has data for; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "convergence" not in report:  # a document-only report
        drawers = (("document_growth_24h.png", _growth),)
    else:
        drawers = (
            ("convergence.png", _convergence),
            ("convergence_vs_size.png", _by_size),
            ("placement.png", _placement),
            ("document_size.png", _document),
            ("document_growth_24h.png", _growth),
            ("traffic.png", _traffic),
            ("placement_by_policy.png", _by_policy),
        )
    for name, draw in drawers:
        figure, axes = plt.subplots(figsize=(7, 4.2))
        if draw(report, axes):
            figure.tight_layout()
            figure.savefig(directory / name, dpi=110)
            written.append(name)
        plt.close(figure)
    return written


def _convergence(report: dict[str, Any], axes: Any) -> bool:
    probes = report["convergence"]["probes"]
    if not probes:
        return False
    for probe in probes:
        points = [(0.0, 0.0), (probe["p50_s"], 0.5), (probe["p99_s"], 0.99), (probe["all_s"], 1.0)]
        points = [(t, share) for t, share in points if t is not None]
        axes.plot(
            [t for t, _ in points],
            [s for _, s in points],
            marker="o",
            alpha=0.7,
            label=f"from {probe['from']}",
        )
    axes.axvline(2.0, color="grey", linestyle="--", label="goal: all within 2.0 s")
    axes.set_xlabel("seconds after the change (simulated)")
    axes.set_ylabel("share of live nodes holding it")
    axes.set_title(f"Label change spreading, {report['options']['nodes']} nodes")
    axes.legend(fontsize=7)
    return True


def _by_size(report: dict[str, Any], axes: Any) -> bool:
    sizes = report.get("convergence_by_size")
    if not sizes:
        return False
    ordered = sorted(sizes.items(), key=lambda item: int(item[0]))
    xs = [int(size) for size, _ in ordered]
    for key, label in (("p50_s", "50% of nodes"), ("p99_s", "99%"), ("all_s", "100%")):
        axes.plot(xs, [figures[key] for _, figures in ordered], marker="o", label=label)
    axes.axhline(2.0, color="grey", linestyle="--", label="goal at 1000 nodes: 2.0 s")
    axes.set_xscale("log")
    axes.set_xlabel("cluster size (nodes)")
    axes.set_ylabel("seconds until seen (median over probes)")
    axes.set_title("Convergence vs cluster size")
    axes.legend(fontsize=8)
    return True


def _placement(report: dict[str, Any], axes: Any) -> bool:
    placement = report["placement"]
    if not report["jobs"]["submitted"]:
        return False
    series = {f"actual ({placement['policy']})": placement["histogram"]}
    for policy, figures in placement["top_ranked_by_policy"].items():
        series[f"top-ranked, {policy}"] = figures["histogram"]
    for label, histogram in series.items():
        xs = [int(k) for k in histogram]
        axes.plot(xs, list(histogram.values()), marker="o", alpha=0.8, label=label)
    axes.set_xlabel("jobs per node")
    axes.set_ylabel("nodes")
    ratios = ", ".join(f"{p}: {f['max_over_mean']}" for p, f in placement["top_ranked_by_policy"].items())
    axes.set_title(f"Jobs per node (max/mean {ratios})", fontsize=9)
    axes.legend(fontsize=8)
    return True


def _by_policy(report: dict[str, Any], axes: Any) -> bool:
    by_policy = report.get("placement_by_policy")
    if not by_policy:
        return False
    for policy, figures in by_policy.items():
        histogram = figures["histogram"]
        axes.plot(
            [int(k) for k in histogram],
            list(histogram.values()),
            marker="o",
            alpha=0.8,
            label=f"{policy}: max/mean {figures['max_over_mean']}, {figures['succeeded']} succeeded",
        )
    axes.set_xlabel("succeeded runs per node")
    axes.set_ylabel("nodes")
    axes.set_title(
        f"Jobs per node by placement policy ({report['options']['nodes']} nodes, same seed)", fontsize=9
    )
    axes.legend(fontsize=8)
    return True


def _document(report: dict[str, Any], axes: Any) -> bool:
    series = report["document"]["size_bytes_series"]
    if not series:
        return False
    axes.plot([t for t, _ in series], [size / 1024 for _, size in series], marker=".")
    axes.set_xlabel("seconds into the active phase (simulated)")
    axes.set_ylabel("document size (KiB)")
    axes.set_title(f"Document size, {report['options']['nodes']} nodes, {report['jobs']['submitted']} jobs")
    return True


def _growth(report: dict[str, Any], axes: Any) -> bool:
    growth = report.get("document_growth")
    if not growth:
        return False
    series = growth["size_bytes_series_hours"]
    axes.plot([h for h, _ in series], [size / 1024 / 1024 for _, size in series], marker=".")
    axes.axhline(GOAL_DOC_MIB, color="grey", linestyle="--", label="goal: 1 MiB")
    axes.set_xlabel("simulated hours of heartbeats")
    axes.set_ylabel("document size (MiB)")
    axes.set_title(
        f"Document growth, {growth['nodes']} nodes, each record rewritten every {growth['refresh_s']:g} s"
    )
    axes.legend(fontsize=8)
    return True


def _traffic(report: dict[str, Any], axes: Any) -> bool:
    series = report["traffic"]["series"]
    if not series:
        return False
    axes.plot([t for t, _ in series], [v * 8 / 1000 for _, v in series])
    axes.axhline(GOAL_KBPS, color="grey", linestyle="--", label="goal: 300 kbps")
    axes.set_yscale("log")
    axes.set_xlabel("seconds into the active phase (simulated)")
    axes.set_ylabel("kbit/s sent per live node")
    axes.set_title("Traffic per node")
    axes.legend(fontsize=8)
    return True
