"""What idle formd processes cost: RSS and CPU of N real nodes on 127.0.0.1 doing nothing but
their gossip, with the HTTPS API and /metrics on (figures, not assertions).

    python -m simulations.bench_idle [--nodes 10] [--seconds 60] [--settle 15] [--scrape 15]
                                     [--without-api]

Nodes run with the shipped timing defaults. After they all see each other and `--settle`
seconds pass, each node's CPU time (user + system, all threads, psutil) is taken over
`--seconds`, while /metrics of every node is scraped every `--scrape` seconds as Prometheus
would (0: never). RSS is sampled every second. `--without-api` runs the same with
http_listen = "" (no API, no metrics) for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import Cluster, all_see, wait_until  # noqa: E402

from simulations import bench_gossip  # noqa: E402

MIB = 1024 * 1024


def run(nodes: int, seconds: float, settle: float, scrape: float, with_api: bool) -> None:
    settings = {**bench_gossip.BENCH_SETTINGS, "executors": '["wasm"]'}
    if not with_api:
        settings["http_listen"] = '""'
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as root, Cluster(Path(root)) as cluster:
        seed = cluster.add("n0", settings=settings)
        for index in range(1, nodes):
            cluster.add(f"n{index}", seed=seed, settings=settings)
        ids = [node.node_id for node in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 180, f"{nodes} nodes to see each other", interval=0.5)
        time.sleep(settle)
        processes = [psutil.Process(node.process.pid) for node in cluster.nodes]
        before = [_cpu_s(p) for p in processes]
        rss: list[list[int]] = [[] for _ in processes]
        scrapes: list[tuple[float, int]] = []
        started = time.monotonic()
        next_scrape = started
        with httpx.Client(verify=False, timeout=10) as http:
            while (now := time.monotonic()) < started + seconds:
                if with_api and scrape and now >= next_scrape:
                    for node in cluster.nodes:
                        t0 = time.perf_counter()
                        text = http.get(f"{node.http_url}/metrics").raise_for_status().content
                        scrapes.append((time.perf_counter() - t0, len(text)))
                    next_scrape += scrape
                for index, process in enumerate(processes):
                    rss[index].append(process.memory_info().rss)
                time.sleep(1.0)
        elapsed = time.monotonic() - started
        cpu = [(_cpu_s(p) - b) / elapsed * 100 for p, b in zip(processes, before)]
        peak = [max(samples) / MIB for samples in rss]
        mean = [statistics.mean(samples) / MIB for samples in rss]
        print(
            f"idle, {nodes} nodes, API and metrics {'on' if with_api else 'off'}, {elapsed:.0f} s after "
            f"{settle:.0f} s settling: CPU per node mean {statistics.mean(cpu):.2f} % of a core "
            f"(min {min(cpu):.2f}, max {max(cpu):.2f}; all nodes {sum(cpu):.1f} %); RSS per node mean "
            f"{statistics.mean(mean):.1f} MiB (min {min(mean):.1f}, max {max(peak):.1f} peak; all nodes "
            f"{sum(mean):.0f} MiB)"
        )
        if scrapes:
            times = sorted(t * 1000 for t, _ in scrapes)
            print(
                f"/metrics: {len(scrapes)} scrapes every {scrape:g} s, median {statistics.median(times):.1f} ms, "
                f"max {times[-1]:.1f} ms, {statistics.mean(size for _, size in scrapes) / 1024:.1f} KiB each"
            )
        sys.stdout.flush()


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=15)
    parser.add_argument("--scrape", type=float, default=15, help="seconds between /metrics scrapes; 0: none")
    parser.add_argument("--without-api", action="store_true", help='also measure with http_listen = ""')
    args = parser.parse_args()
    print(
        f"formd idle benchmark (real processes on 127.0.0.1, shipped timings; load "
        f"{' '.join(f'{x:.1f}' for x in psutil.getloadavg())})"
    )
    run(args.nodes, args.seconds, args.settle, args.scrape, with_api=True)
    if args.without_api:
        run(args.nodes, args.seconds, args.settle, args.scrape, with_api=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
