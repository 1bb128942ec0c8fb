"""Reservations on real formd processes: two jobs that each need most of one node's
allocatable memory never run on one node at the same time."""

from datetime import datetime

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status
from wasm_jobs import sleeper_context

pytestmark = pytest.mark.slow


def test_two_big_jobs_never_share_a_node_at_once(tmp_path):
    context = sleeper_context(tmp_path)
    with Cluster(tmp_path / "nodes") as cluster:
        a = cluster.add("a")
        b = cluster.add("b", seed=a)
        nodes = (a, b)
        wait_until(lambda: all_see(nodes, [n.node_id for n in nodes]), 30, "the cluster to be up")
        # 55% of a node's total memory fits one job per node, never two, however much memory
        # the host frees meanwhile (allocatable = min(available, total - reserved)); 55% of the
        # allocatable memory seen once did not: other processes on the host freeing memory
        # made room for a second job. It needs that much available at start (true on this host).
        total = min(n["capabilities"]["memory_bytes"] for n in a.nodes())
        assert total * 0.55 < min(n["capacity"]["allocatable_memory_bytes"] for n in a.nodes()), (
            "host memory too busy for this test"
        )
        memory = f"{int(total * 0.55) // 1024**2}MiB"
        jobs = []
        for _ in range(4):
            jobs.append(
                a.form(
                    "submit",
                    str(context),
                    "--kind",
                    "wasm",
                    "--module",
                    "sleeper.wasm",
                    "--cmd",
                    "2",
                    "--memory",
                    memory,
                ).stdout.strip()
            )
        wait_until(
            lambda: all(status(a, j)["state"] == "succeeded" for j in jobs), 90, "all four jobs to finish"
        )
        spans: dict[str, list[tuple[datetime, datetime]]] = {}
        for job_id in jobs:
            seen = status(a, job_id)
            spans.setdefault(seen["node"], []).append(
                (datetime.fromisoformat(seen["started_at"]), datetime.fromisoformat(seen["finished_at"]))
            )
        for node_spans in spans.values():
            node_spans.sort()
            for (_, end), (start, _) in zip(node_spans, node_spans[1:]):
                assert start >= end, f"two big jobs overlapped on one node: {node_spans}"
        assert sum(len(s) for s in spans.values()) == 4
