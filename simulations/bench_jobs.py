"""Jobs end to end with real formd processes on 127.0.0.1 (figures, not assertions).

    python -m simulations.bench_jobs [--nodes 3] [--latency-jobs 60] [--jobs 500] [--via http]
                                     [--set key=value ...] [--profile DIR]

A no-op WASM job (a module whose _start returns at once) isolates formnet's own costs:
document writes, gossip, decisions, staging, blob stores, records.

- submit -> running latency: jobs submitted one at a time on the first node, each waited for;
  latency = the runner's `started_at` (its wall clock when it wrote `running`) minus the
  wall clock just before the submit request was sent. All processes share this host's clock.
  Placement spreads the jobs, so most run on another node (gossip included).
- throughput: `--jobs` jobs submitted as fast as the control socket takes them (job.submit-many,
  25 per request, on a few connections; --one-by-one: job.submit per job, pipelined), then
  jobs finished per second = jobs / (last `finished_at` - first submit). Submit
  acknowledgements per second are printed too, and the CPU time all formd processes used per
  job (from /proc), which depends less on what else the machine runs.

--via http measures both again through the first node's HTTPS API (signed requests by an
admin client key, the calls `form --remote` makes: POST /v1/call/<method>) right after the
socket figures on the same cluster, and prints the ratios (goal from issue 16: HTTP within
1.3x of the socket).

Goals from issue 5: p50 latency <= 250 ms; >= 200 jobs/s finished on 3-5 nodes.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, ContextManager, Protocol

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import procs  # noqa: E402
from procs import Cluster, all_see, wait_until  # noqa: E402

from cli.client import Connection  # noqa: E402
from cli.remote import RemoteTarget, generate_key, load_key  # noqa: E402
from cli.remote_blobs import upload as remote_upload  # noqa: E402
from pack_manager.context_archive import file_digest, pack_context  # noqa: E402
from simulations import bench_gossip  # noqa: E402

BENCH_SETTINGS = {
    **bench_gossip.BENCH_SETTINGS,
    "executors": '["wasm"]',
}  # shipped timing defaults, spelled out
NOOP_WAT = '(module (func (export "_start")))'
FINAL = ("succeeded", "failed", "cancelled", "timed_out", "unschedulable")


def noop_context(root: Path) -> Path:
    context = root / "noop"
    context.mkdir()
    (context / "noop.wasm").write_bytes(wasmtime.wat2wasm(NOOP_WAT))
    tar = root / "noop.tar"
    pack_context(context, tar)
    return tar


def upload(connection: Connection, tar: Path) -> str:
    data = tar.read_bytes()
    digest = file_digest(tar)
    connection.call(
        "blob.put",
        {"digest": digest, "size": len(data), "offset": 0, "data": base64.b64encode(data).decode()},
    )
    return digest


class Client(Protocol):
    def call(self, method: str, params: dict | None = None) -> Any: ...


# Opens a client of the submitting node: its control socket, or its HTTPS API.
Opener = Callable[[float], ContextManager[Client]]


def socket_opener(node: procs.Formd) -> Opener:
    return lambda timeout: Connection(node.socket, timeout=timeout)


def http_opener(node: procs.Formd, root: Path) -> Opener:
    """An admin client key granted on the node, and its HTTPS API pinned to the node's certificate."""
    key_path = root / "bench-client.key"
    public = generate_key(key_path)
    node.call("acl.grant", {"key": public, "role": "admin", "max_running": None})
    key, fingerprint = load_key(key_path), node.call("status")["tls_fingerprint"]
    return lambda timeout: closing(RemoteTarget(node.http_url, key, fingerprint, timeout=timeout))


def submit_params(context: str) -> dict:
    return {
        "kind": "wasm",
        "context": context,
        "module": "noop.wasm",
        "requirements": {"cpu": "10m", "memory": "16MiB"},
        "timeout_ms": 60_000,
    }


def epoch_ms(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp() * 1000


# How often the latency run asks whether its job ended. Each ask costs the submitter's main
# thread a request (an HTTPS one costs several times a socket one), so asking too often slows
# the very decisions being measured.
POLL_S = 0.05


def wait_final(connection: Client, job_id: str, timeout: float = 60, poll_s: float = POLL_S) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = connection.call("job.status", {"job": job_id})
        if status["state"] in FINAL:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"job {job_id[:12]} not final after {timeout:g}s: {status['state']} {status['reason']}"
            )
        time.sleep(poll_s)


def measure_latency(
    cluster: Cluster, context: str, count: int, opener: Opener
) -> tuple[list[float], int, list[float]]:
    """submit->running latencies (ms), how many ran on another node, and the submit requests'
    round trips (ms: until the job was durable and acknowledged)."""
    submitter = cluster.nodes[0]
    latencies, remote, acks = [], 0, []
    with opener(60) as connection:
        for _ in range(count):
            sent_ms = time.time() * 1000
            job_id = connection.call("job.submit", submit_params(context))["id"]
            acks.append(time.time() * 1000 - sent_ms)
            status = wait_final(connection, job_id)
            if status["state"] != "succeeded" or not status["started_at"]:
                raise RuntimeError(f"job {job_id[:12]}: {status['state']}: {status['reason']}")
            latencies.append(epoch_ms(status["started_at"]) - sent_ms)
            remote += status["node"] != submitter.node_id
    return latencies, remote, acks


def measure_throughput(
    cluster: Cluster, context: str, count: int, connections: int, opener: Opener, batch_submit: bool = True
) -> dict:
    submitter = cluster.nodes[0]
    ids: list[str] = []
    lock = threading.Lock()
    per_connection = [count // connections + (i < count % connections) for i in range(connections)]
    batch = 25

    failures: list[Exception] = []

    def submit_share(share: int) -> None:
        try:
            submit_all(share)
        except Exception as exc:  # reported after the threads end
            failures.append(exc)

    def submit_all(share: int) -> None:
        with opener(120) as connection:
            done = 0
            while done < share:
                n = min(batch, share - done)
                if batch_submit:
                    new_ids = connection.call("job.submit-many", {"jobs": [submit_params(context)] * n})[
                        "ids"
                    ]
                elif isinstance(connection, Connection):  # one job.submit per job, pipelined
                    new_ids = [
                        r["id"] for r in connection.call_many([("job.submit", submit_params(context))] * n)
                    ]
                else:  # one job.submit per job, one request each (HTTP/1.1 does not pipeline)
                    new_ids = [connection.call("job.submit", submit_params(context))["id"] for _ in range(n)]
                with lock:
                    ids.extend(new_ids)
                done += n

    cpu_before, main_before, bench_before = (
        cluster_cpu_s(cluster),
        cluster_cpu_s(cluster, main_only=True),
        time.process_time(),
    )
    started_ms = time.time() * 1000
    threads = [threading.Thread(target=submit_share, args=(share,)) for share in per_connection]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    acked_ms = time.time() * 1000
    if failures:
        raise RuntimeError(f"submit failed: {failures[0]}")
    wanted = set(ids)

    def all_final() -> list[dict] | None:
        listed = [job for job in submitter.call("job.list") if job["id"] in wanted]
        return listed if len(listed) == len(wanted) and all(job["state"] in FINAL for job in listed) else None

    # Polled once a second: job.list computes 500 status objects on the submitter, a visible
    # share of its CPU at 2 polls/s; finished_per_s uses the runners'
    # finished_at, not when this poll saw them.
    jobs = wait_until(all_final, 600, f"{count} jobs to finish", interval=1.0)
    cpu_used = cluster_cpu_s(cluster) - cpu_before
    main_used = cluster_cpu_s(cluster, main_only=True) - main_before
    bench_used = time.process_time() - bench_before
    last_ms = max(epoch_ms(job["finished_at"]) for job in jobs if job["finished_at"])
    states: dict[str, int] = {}
    runners: dict[str, int] = {}
    for job in jobs:
        states[job["state"]] = states.get(job["state"], 0) + 1
        runners[(job["node"] or "-")[:12]] = runners.get((job["node"] or "-")[:12], 0) + 1
    return {
        "jobs": count,
        "submit_per_s": count / ((acked_ms - started_ms) / 1000),
        "finished_per_s": count / ((last_ms - started_ms) / 1000),
        "elapsed_s": (last_ms - started_ms) / 1000,
        "cpu_ms_per_job": cpu_used * 1000 / count,
        "main_ms_per_job": main_used * 1000 / count,  # formd trio threads; the rest is worker threads
        "bench_ms_per_job": bench_used * 1000 / count,  # this client (submits, polling)
        "states": states,
        "runners": runners,
    }


def cluster_cpu_s(cluster: Cluster, main_only: bool = False) -> float:
    """CPU seconds (user + system) used so far by every formd process: all threads, or with
    main_only the main (trio) thread alone."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in cluster.nodes:
        pid = node.process.pid
        stat = f"/proc/{pid}/task/{pid}/stat" if main_only else f"/proc/{pid}/stat"
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# formd under cProfile timed by the main thread's CPU time: wall time would charge the trio
# thread with waits for the GIL that worker threads (wasmtime, blob writes) hold.
PROFILED_FORMD = """
import cProfile, sys, time
from daemon.main import main
out, sys.argv = sys.argv[1], ["formd", *sys.argv[2:]]
profile = cProfile.Profile(time.thread_time)
try:
    profile.runcall(main)
except SystemExit:
    pass
finally:
    profile.dump_stats(out)
"""


def add_node(cluster: Cluster, name: str, seed: procs.Formd | None, profile_dir: Path | None) -> procs.Formd:
    """With profile_dir, the node runs under cProfile (main thread CPU time) and writes
    <profile_dir>/<name>.prof when it stops (SIGTERM, see run)."""
    formd = procs.FORMD
    if profile_dir is not None:
        procs.FORMD = [sys.executable, "-c", PROFILED_FORMD, str(profile_dir / f"{name}.prof")]
    try:
        return cluster.add(name, seed=seed, settings=BENCH_SETTINGS)
    finally:
        procs.FORMD = formd


def run(
    nodes: int,
    latency_jobs: int,
    jobs: int,
    connections: int,
    batch_submit: bool,
    profile_dir: Path | None = None,
    via_http: bool = False,
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as root, Cluster(Path(root)) as cluster:
        seed = add_node(cluster, "n0", None, profile_dir)
        for index in range(1, nodes):
            add_node(cluster, f"n{index}", seed, profile_dir)
        ids = [node.node_id for node in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 120, f"{nodes} nodes to see each other", interval=0.2)
        tar = noop_context(Path(root))
        with Connection(cluster.nodes[0].socket) as connection:
            context = upload(connection, tar)
        openers = {"socket": socket_opener(cluster.nodes[0])}
        if via_http:
            openers["http"] = http_opener(cluster.nodes[0], Path(root))
            with openers["http"](60) as target:  # the context again, streamed: the same digest
                assert remote_upload(target, tar) == context
        figures: dict[str, dict[str, float]] = {}
        for via, opener in openers.items():
            figures[via] = measure(
                cluster, context, latency_jobs, jobs, connections, batch_submit, opener, via
            )
        if via_http:
            ratios = {name: figures["http"][name] / figures["socket"][name] for name in figures["socket"]}
            print(
                "http / socket: "
                + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
                + " (goal: latency within 1.3x, jobs/s at least 1/1.3 of the socket)"
            )
        if profile_dir is not None:
            for node in cluster.nodes:  # a graceful stop, so cProfile writes its file
                node.stop()
            print(
                f"profiles: {', '.join(str(profile_dir / (node.name + '.prof')) for node in cluster.nodes)}"
            )


def measure(
    cluster: Cluster,
    context: str,
    latency_jobs: int,
    jobs: int,
    connections: int,
    batch_submit: bool,
    opener: Opener,
    via: str,
) -> dict[str, float]:
    """Print the latency and throughput figures through one way of talking to the first node;
    returns the headline figures."""
    nodes = len(cluster.nodes)
    figures: dict[str, float] = {}
    if latency_jobs:
        latencies, remote, acks = measure_latency(cluster, context, latency_jobs, opener)
        figures["p50"], figures["p99"] = statistics.median(latencies), percentile(latencies, 0.99)
        figures["submit ack p50"] = statistics.median(acks)
        print(
            f"[{via}] submit->running, {nodes} nodes, {len(latencies)} no-op WASM jobs one at a time "
            f"({remote} ran on another node): "
            f"p50 {figures['p50']:.0f} ms, p99 {figures['p99']:.0f} ms, "
            f"min {min(latencies):.0f} ms, max {max(latencies):.0f} ms (goal p50 <= 250 ms); "
            f"submit acknowledged p50 {figures['submit ack p50']:.1f} ms, p99 {percentile(acks, 0.99):.1f} ms"
        )
        sys.stdout.flush()
    if jobs:
        result = measure_throughput(cluster, context, jobs, connections, opener, batch_submit)
        figures["jobs/s"], figures["submits/s"] = result["finished_per_s"], result["submit_per_s"]
        print(
            f"[{via}] throughput, {nodes} nodes: {result['jobs']} no-op WASM jobs finished in "
            f"{result['elapsed_s']:.2f} s = "
            f"{result['finished_per_s']:.0f} jobs/s (goal >= 200/s); submits acknowledged at "
            f"{result['submit_per_s']:.0f}/s "
            f"over {connections} connection(s) "
            f"({'job.submit-many' if batch_submit else 'job.submit'}); formd CPU "
            f"{result['cpu_ms_per_job']:.1f} ms per job (all nodes together, "
            f"i.e. at most {1000 / result['cpu_ms_per_job']:.0f} jobs/s per core; main threads "
            f"{result['main_ms_per_job']:.1f} ms, "
            f"worker threads {result['cpu_ms_per_job'] - result['main_ms_per_job']:.1f} ms; "
            f"this client {result['bench_ms_per_job']:.1f} ms); states {result['states']}; per "
            f"runner {result['runners']}"
        )
        sys.stdout.flush()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[3])
    parser.add_argument("--latency-jobs", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument(
        "--connections", type=int, default=4, help="concurrent submit connections in the throughput run"
    )
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="submit with one job.submit per job (pipelined) instead of job.submit-many",
    )
    parser.add_argument(
        "--via",
        choices=("socket", "http"),
        default="socket",
        help="http: measure through the HTTPS API too, after the socket on the same cluster",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run each formd under cProfile; DIR/<node>.prof is written when the run ends",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a formd.toml setting"
    )
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        BENCH_SETTINGS[key] = value
    print(
        "formd jobs benchmark (real processes on 127.0.0.1; gossip 200 ms x 3, tick 1 s)"
        + (f"; overrides: {' '.join(args.set)}" if args.set else "")
    )
    for nodes in args.nodes:
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        run(
            nodes,
            args.latency_jobs,
            args.jobs,
            args.connections,
            not args.one_by_one,
            args.profile,
            args.via == "http",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
