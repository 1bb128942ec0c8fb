"""Prometheus metrics of one node, made at scrape time from what the control methods return.

Gauges and counters come from the node's status, its view of every node and of every job the
document holds; the two histograms (submit -> start and run duration) are computed over the
jobs still in the document, so a retired job leaves them, as it leaves `form jobs`.
"""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any, Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

SUBMIT_TO_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RUN_DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)
NODE_STATUSES = ("alive", "suspect", "dead", "left")
JOB_STATES = (
    "queued",
    "claimed",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "unschedulable",
)
STATUS_COUNTERS = {
    "updates_applied": "Document updates from peers applied",
    "updates_refused": "Document updates from peers refused (bad signature, wrong writer, malformed)",
    "probes_sent": "SWIM probes sent",
    "probes_failed": "SWIM probes without an ack",
    "refutations": "Suspicions of this node it refuted",
    "bytes_sent": "Bytes this node sent to peers",
    "bytes_received": "Bytes this node received from peers",
    "frames_dropped": "Frames dropped (bad seal, replay, oversize)",
}


def _seconds(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.datetime.fromisoformat(iso).timestamp()


def _histogram(name: str, doc: str, values: list[float], buckets: tuple[float, ...]) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= bound) for bound in buckets]
    return HistogramMetricFamily(
        name,
        doc,
        buckets=[(str(bound), count) for bound, count in zip(buckets, counts)] + [("+Inf", len(values))],
        sum_value=sum(values),
    )


def metric_families(status: Mapping[str, Any], nodes: list[dict], jobs: list[dict]) -> list:
    """The metric families for one scrape (pure: the three method results in, families out)."""
    me = status["id"]
    families: list = []
    by_status = GaugeMetricFamily(
        "formnet_nodes", "Nodes this node knows, by liveness status", labels=["status"]
    )
    counts = Counter(n["status"] for n in nodes)
    for name in NODE_STATUSES:
        by_status.add_metric([name], counts.get(name, 0))
    families.append(by_status)

    by_state = GaugeMetricFamily("formnet_jobs", "Jobs in the document, by state", labels=["state"])
    states = Counter(j["state"] for j in jobs)
    for name in JOB_STATES:
        by_state.add_metric([name], states.get(name, 0))
    families.append(by_state)

    runs = GaugeMetricFamily(
        "formnet_node_runs", "Jobs this node runs or ran, by state and executor", labels=["state", "executor"]
    )
    mine = Counter(
        (j["state"], "wasm" if j["kind"] == "wasm" else "podman") for j in jobs if j.get("node") == me
    )
    for (state, executor), count in sorted(mine.items()):
        runs.add_metric([state, executor], count)
    families.append(runs)

    own = next((n for n in nodes if n.get("self")), None)
    if own is not None:
        allocatable = GaugeMetricFamily(
            "formnet_node_allocatable",
            "What this node offers jobs in all (millicores, bytes)",
            labels=["resource"],
        )
        capabilities = own.get("capabilities") or {}
        for resource, key in (
            ("cpu_millicores", "cpu_millicores"),
            ("memory_bytes", "memory_bytes"),
            ("disk_bytes", "disk_bytes"),
        ):
            if isinstance(capabilities.get(key), int):
                allocatable.add_metric([resource], capabilities[key])
        allocatable.add_metric(["gpus"], len(capabilities.get("gpus") or []))
        families.append(allocatable)
        capacity = GaugeMetricFamily(
            "formnet_node_capacity_free",
            "What this node has free now (millicores, bytes)",
            labels=["resource"],
        )
        free = own.get("capacity") or {}
        for resource, key in (
            ("cpu_millicores", "cpu_millicores_idle"),
            ("memory_bytes", "memory_available_bytes"),
            ("disk_bytes", "disk_free_bytes"),
            ("running_jobs", "running_jobs"),
        ):
            if isinstance(free.get(key), int):
                capacity.add_metric([resource], free[key])
        families.append(capacity)

    for key, doc in STATUS_COUNTERS.items():
        if isinstance(status.get(key), int):
            families.append(CounterMetricFamily(f"formnet_{key}", doc, value=status[key]))
    for key, doc in (("known_nodes", "Node records in the document"), ("live_peers", "Peers alive now")):
        if isinstance(status.get(key), int):
            families.append(GaugeMetricFamily(f"formnet_{key}", doc, value=status[key]))

    waits, durations = [], []
    for job in jobs:
        submitted, started, finished = (
            _seconds(job.get(k)) for k in ("submitted_at", "started_at", "finished_at")
        )
        if submitted is not None and started is not None:
            waits.append(max(0.0, started - submitted))
        if started is not None and finished is not None:
            durations.append(max(0.0, finished - started))
    families.append(
        _histogram(
            "formnet_job_submit_to_start_seconds",
            "From submit to the run starting",
            waits,
            SUBMIT_TO_START_BUCKETS,
        )
    )
    families.append(
        _histogram("formnet_job_run_seconds", "How long runs took", durations, RUN_DURATION_BUCKETS)
    )
    return families


class _Families:
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


async def render_metrics(methods: Mapping[str, Handler]) -> bytes:
    status = await methods["status"]({})
    nodes = await methods["nodes"]({})
    jobs = await methods["job.list"]({}) if "job.list" in methods else []
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metric_families(status, nodes, jobs)))
    return generate_latest(registry)
