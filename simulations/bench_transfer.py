"""Data transfer with real formd processes on 127.0.0.1 (figures, not assertions).

    python -m simulations.bench_transfer [--size 1GiB] [--repeat 3] [--dir DIR]

One file of random bytes, and three ways it moves, each timed and compared with `cp` of
the same file on the same disk in the same run (the median of five cps), and with `cp` plus
`sync` of the copy (formd makes every blob durable, fsync, before it counts as stored). Every
cp and every phase starts with nothing dirty in the page cache (`sync` first, not timed), so
one does not pay for the writeback of another, and with the same kind of free memory: in a
virtual machine, memory the guest has not touched lately costs a host fault per page on
first use (a cp into such memory runs 5-10x slower than into memory just freed), so a file
of 1.5x the size is written and deleted first (not timed), and every copy, formd's and
cp's, lands in recently freed memory.

Each transfer is timed `--repeat` times (3) and its median shown, like cp's:

- submit: `form submit CTX --input FILE` on node A, the whole CLI command (Python start
  included): the file goes to formd open (blob.put-fd), kernel-copied and hashed. Each
  submit is a job that node B runs, one at a time (a WASM module that copies the input to
  an output, 1 MiB at a time).
- peer fetch: `job.files` of the first job on A, then on each extra node (f1, f2, ...):
  the output comes from B (or a node that fetched it already) as a file stream over the
  sealed transport, hashed as written, fsynced.
- result download: `form result JOB -o DIR` on A, the whole CLI command: formd hands the
  stored outputs to `form` open, which checks their digest and unpacks them.

Also shown: how long B took from the first accepted submit to running its job (gossip,
claim and fetching the input from A), and the peak RSS of each formd (psutil, sampled every
20 ms from before the first submit to after the last download). Goals from issue 13: each transfer within 3x
of cp; formd RSS under 100 MiB throughout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import FORM, Cluster, all_see, compile_wasi, wait_until  # noqa: E402

from cli.client import Connection  # noqa: E402
from metrics_agent.units import parse_bytes  # noqa: E402
from simulations import bench_gossip  # noqa: E402
from simulations.bench_jobs import epoch_ms, wait_final  # noqa: E402

# The job: /data/inputs/in.bin copied to /data/outputs/in.bin in 1 MiB blocks.
COPY_C = r"""
#include <stdio.h>
static char block[1 << 20];
int main(void) {
    FILE *in = fopen("/data/inputs/in.bin", "rb"), *out = fopen("/data/outputs/in.bin", "wb");
    if (!in || !out) return 1;
    size_t n;
    while ((n = fread(block, 1, sizeof block, in)) > 0)
        if (fwrite(block, 1, n, out) != n) return 1;
    return fclose(out) != 0;
}
"""
MIB = 1024 * 1024
SETTINGS = {**bench_gossip.BENCH_SETTINGS, "executors": '["wasm"]'}


class Watch:
    """Peak RSS and CPU seconds of each formd, per phase (RSS sampled in a thread every 20 ms)."""

    def __init__(self, pids: dict[str, int], work: Path, size: int, interval: float = 0.02) -> None:
        self.work, self.size = work, size
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.phases: dict[str, list[dict]] = {}  # name -> one entry per time the phase ran
        self._peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, process in self.processes.items():
                try:
                    self._peak[name] = max(self._peak[name], process.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def _cpu(self) -> dict[str, float]:
        return {name: sum(process.cpu_times()[:2]) for name, process in self.processes.items()}

    @contextlib.contextmanager
    def phase(self, name: str):
        recycle_free_memory(self.work, self.size)
        os.sync()
        self._peak = {key: process.memory_info().rss for key, process in self.processes.items()}
        cpu = self._cpu()
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        used = self._cpu()
        self.phases.setdefault(name, []).append(
            {"s": seconds, "peak_rss": dict(self._peak), "cpu_s": {key: used[key] - cpu[key] for key in used}}
        )

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[-6:])} failed: {done.stderr.strip()}")
    return took, done.stdout


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        for offset in range(0, size, MIB):
            out.write(os.urandom(min(MIB, size - offset)))
        out.flush()
        os.fsync(out.fileno())


def recycle_free_memory(work: Path, size: int) -> None:
    """Write and delete a scratch file of 1.5x `size`: the next copies of up to `size`
    bytes get pages the guest has just used (see the module's docstring)."""
    scratch = work / "scratch"
    block = b"\xa5" * MIB
    with open(scratch, "wb", buffering=0) as out:
        for _ in range(0, size * 3 // 2, MIB):
            out.write(block)
    scratch.unlink()


def cp_seconds(source: Path, work: Path, runs: int = 3) -> list[tuple[float, float]]:
    """(cp, cp + sync of the copy) seconds, per run."""
    size = source.stat().st_size
    times = []
    for run in range(runs):
        target = work / f"cp-{run}"
        recycle_free_memory(work, size)
        os.sync()
        took, _ = timed(["cp", str(source), str(target)])
        synced, _ = timed(["sync", str(target)])
        times.append((took, took + synced))
        target.unlink()
    return times


def run(size: int, work: Path, repeat: int) -> dict:
    context = work / "context"
    context.mkdir()
    (work / "copy.c").write_text(COPY_C)
    compile_wasi(work / "copy.c", context / "copy.wasm")
    source = work / "in.bin"
    write_random(source, size)
    cps = cp_seconds(source, work)
    limits = {"max_input_bytes": str(max(size, MIB)), "job_retention_s": "3600"}
    with Cluster(work / "nodes") as cluster:
        a = cluster.add("a", settings={**SETTINGS, **limits})
        b = cluster.add("b", seed=a, labels=["role=runner"], settings={**SETTINGS, **limits})
        # More nodes to fetch B's output, so the peer fetch is timed `repeat` times as well.
        fetchers = [a] + [
            cluster.add(f"f{i}", seed=a, settings={**SETTINGS, **limits}) for i in range(1, repeat)
        ]
        ids = [node.node_id for node in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 60, "the nodes to converge")
        cli_start, _ = timed([*FORM, "--socket", str(a.socket), "status", "--json"])
        form_a = [*FORM, "--socket", str(a.socket)]
        submit = [*form_a, "submit", str(context), "--kind", "wasm", "--module", "copy.wasm"]
        submit += ["--input", str(source), "--label", "role=runner"]
        with (
            Watch({node.name: node.process.pid for node in cluster.nodes}, work, size) as watch,
            Connection(a.socket, timeout=600) as api,
        ):
            with watch.phase("idle"):
                time.sleep(1)
            jobs = []
            for _ in range(repeat):  # one job at a time: a running job would load the next submit
                with watch.phase("submit"):
                    _, out = timed(submit)
                job_id, accepted = out.split()[0], time.time()
                with watch.phase("job on B"):
                    status = wait_final(api, job_id, 3600)
                if status["state"] != "succeeded" or status["node"] != b.node_id:
                    raise RuntimeError(
                        f"job {job_id[:12]}: {status['state']} on {status['node']}: {status['reason']}"
                    )
                jobs.append((job_id, accepted, status))
            job_id, accepted, first = jobs[0]
            cps += cp_seconds(source, work, 1)
            for fetcher in fetchers:
                with Connection(fetcher.socket, timeout=600) as connection, watch.phase("peer fetch"):
                    files = connection.call("job.files", {"job": job_id, "which": "outputs"})
            for run in range(repeat):
                with watch.phase("result download"):
                    timed([*form_a, "result", job_id, "-o", str(work / f"result-{run}")])
                got = (work / f"result-{run}" / "in.bin").stat().st_size
                if got != size:
                    raise RuntimeError(f"result holds {got} bytes, expected {size}")
                shutil.rmtree(work / f"result-{run}")
            cps += cp_seconds(source, work, 1)
    return {
        "size": size,
        "cp_s": cps,
        "cli_start_s": cli_start,
        "to_running_s": epoch_ms(first["started_at"]) / 1000 - accepted,
        "fetched": sum(item["size"] for item in files),
        "phases": watch.phases,
    }


def report(figures: dict) -> str:
    size = figures["size"]
    cp = statistics.median(c for c, _ in figures["cp_s"])
    cp_sync = statistics.median(s for _, s in figures["cp_s"])
    mib = size / MIB
    lines = [
        f"{mib:.0f} MiB file; cp {cp:.2f} s ({mib / cp:.1f} MiB/s; median of "
        + ", ".join(f"{c:.2f}" for c, _ in figures["cp_s"])
        + f"); cp + sync {cp_sync:.2f} s (median of "
        + ", ".join(f"{s:.2f}" for _, s in figures["cp_s"])
        + f"); form CLI start + one call {figures['cli_start_s']:.2f} s"
    ]
    moved = {"submit": size, "peer fetch": figures["fetched"], "result download": size}
    for name, samples in figures["phases"].items():
        seconds = statistics.median(sample["s"] for sample in samples)
        speed = " " * 42
        if name in moved:
            speed = f"{moved[name] / MIB / seconds:7.1f} MiB/s {seconds / cp:5.2f}x cp {seconds / cp_sync:5.2f}x +sync"
        nodes = samples[0]["peak_rss"]
        rss = " ".join(f"{key} {max(s['peak_rss'][key] for s in samples) / MIB:5.1f}" for key in nodes)
        cpu = " ".join(f"{key} {statistics.median(s['cpu_s'][key] for s in samples):5.2f}" for key in nodes)
        times = ", ".join(f"{sample['s']:.2f}" for sample in samples)
        runs = f" (median of {times})" if len(samples) > 1 else ""
        lines.append(f"  {name:<16} {seconds:7.2f} s {speed}  peak RSS MiB: {rss}  formd CPU s: {cpu}{runs}")
    lines.append(
        f"  (first job on B: submit accepted -> running {figures['to_running_s']:.2f} s: gossip, claim, "
        "input fetched from A; then the WASM copy and storing its output)"
    )
    peak = max(v for samples in figures["phases"].values() for s in samples for v in s["peak_rss"].values())
    lines.append(f"  formd peak RSS over the run: {peak / MIB:.1f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="file size, e.g. 1GiB, 256MiB")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=3, help="times each transfer is timed (median shown)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    size = parse_bytes(args.size)
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=args.dir))
    try:
        load = os.getloadavg()
        print(
            f"bench_transfer: {platform.node()}, {os.cpu_count()} cpus, "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, work dir {work}",
            flush=True,
        )
        print(report(run(size, work, args.repeat)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
