"""Convergence benchmark with real formd processes on 127.0.0.1 (figures, not assertions).

    python -m simulations.bench_gossip [--nodes 10 20] [--changes 5] [--steady 10]

For each cluster size N: start N formd processes (memberlist LAN defaults: gossip 200 ms to
3 peers, tick 1 s, anti-entropy 30 s) joined through one seed, wait until every node sees
every node alive, then
- change a label on one node `--changes` times and time how long until every node's
  `nodes` view shows it (polled over the control sockets every 10 ms);
- read every node's transport byte counters, wait `--steady` seconds, read again:
  bytes sent per node per second at steady state (record refreshes, probes);
- count the "bad update dropped" lines in every node's log after all were alive: an honest
  cluster should have none (a refused honest update costs a repair exchange);
- kill -9 one node and time how long until every other node shows it dead (failure
  detection: probes' suspicions, or heartbeat silence in builds without probes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import DEFAULT_TIMINGS, Cluster, all_see, wait_until  # noqa: E402

# The shipped defaults, spelled out so the figures say what they measured.
BENCH_SETTINGS = {**DEFAULT_TIMINGS, "retransmit_mult": "4", "heartbeat_retransmit_mult": "1"}


def label_of(node, target_id: str) -> str | None:
    for entry in node.call("nodes"):
        if entry["id"] == target_id:
            return entry["labels"].get("bench")
    return None


def refusals_logged(cluster: Cluster) -> int:
    return sum(node.log_text().count("bad update dropped") for node in cluster.nodes)


def time_label_change(cluster: Cluster, changer, value: str) -> float:
    """Seconds from the label.set reply until the last node shows the new value."""
    seen_at: dict[str, float] = {}
    start_event = threading.Event()
    start = [0.0]

    def watch(node):
        start_event.wait()
        while True:
            try:
                if label_of(node, changer.node_id) == value:
                    seen_at[node.name] = time.monotonic()
                    return
            except Exception:
                pass
            if time.monotonic() - start[0] > 120:
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=watch, args=(node,)) for node in cluster.nodes]
    for thread in threads:
        thread.start()
    changer.call("label.set", {"labels": {"bench": value}})
    start[0] = time.monotonic()
    start_event.set()
    for thread in threads:
        thread.join()
    if len(seen_at) < len(cluster.nodes):
        return float("inf")
    return max(seen_at.values()) - start[0]


def run(size: int, changes: int, steady: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-gossip-{size}-") as root, Cluster(Path(root)) as cluster:
        began = time.monotonic()
        seed = cluster.add("n0", settings=BENCH_SETTINGS)
        for index in range(1, size):
            cluster.add(f"n{index}", seed=seed, settings=BENCH_SETTINGS)
        ids = [node.node_id for node in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 180, f"{size} nodes to converge", interval=0.5)
        converged = time.monotonic() - began
        refused_before = refusals_logged(cluster)

        times = [
            time_label_change(cluster, cluster.nodes[(i * 7 + 3) % size], f"v{i}") for i in range(changes)
        ]

        first = {n.name: n.call("status") for n in cluster.nodes}
        t0 = time.monotonic()
        time.sleep(steady)
        second = {n.name: n.call("status") for n in cluster.nodes}
        elapsed = time.monotonic() - t0
        sent = [(second[k]["bytes_sent"] - first[k]["bytes_sent"]) / elapsed for k in first]
        received = [(second[k]["bytes_received"] - first[k]["bytes_received"]) / elapsed for k in first]
        refused_after = refusals_logged(cluster) - refused_before
        victim, others = cluster.nodes[-1], cluster.nodes[:-1]
        victim.kill()
        killed = time.monotonic()
        wait_until(
            lambda: all_see(others, [victim.node_id], "dead"),
            600,
            "the killed node dead everywhere",
            interval=0.1,
        )
        detection = time.monotonic() - killed
        return {
            "nodes": size,
            "start_to_converged_s": converged,
            "label_propagation_s": times,
            "sent_bytes_per_node_per_s": statistics.mean(sent),
            "sent_max_node": max(sent),
            "received_bytes_per_node_per_s": statistics.mean(received),
            "refused_while_joining": refused_before,
            "refused_after_converged": refused_after,
            "crash_to_dead_everywhere_s": detection,
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--steady", type=float, default=10.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a formd.toml setting, e.g. heartbeat_retransmit_mult=1",
    )
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        BENCH_SETTINGS[key] = value
    print(
        "formd gossip benchmark (real processes on 127.0.0.1; gossip 200 ms x 3, tick 1 s, anti-entropy 30 s)"
        + (f"; overrides: {' '.join(args.set)}" if args.set else "")
    )
    for size in args.nodes:
        result = run(size, args.changes, args.steady)
        times = result["label_propagation_s"]
        print(
            f"N={size:3d}  all alive {result['start_to_converged_s']:.1f} s after the first start | "
            f"label seen everywhere: median {statistics.median(times) * 1000:.0f} ms, "
            f"max {max(times) * 1000:.0f} ms over {len(times)} changes | "
            f"steady state: {result['sent_bytes_per_node_per_s'] / 1024:.1f} KiB/s sent per node "
            f"(max {result['sent_max_node'] / 1024:.1f}), "
            f"{result['received_bytes_per_node_per_s'] / 1024:.1f} KiB/s received | "
            f"'bad update dropped' log lines: {result['refused_while_joining']} while joining, "
            f"{result['refused_after_converged']} after | "
            f"kill -9 -> dead everywhere {result['crash_to_dead_everywhere_s']:.1f} s"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
