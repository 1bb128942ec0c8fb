"""Overhead of the Podman executor against a bare `podman run --rm` of the same short
container, both measured in this run (median of several). Goal: ratio <= 1.3.

    python -m simulations.bench_executor [--runs 7]

The executor's figure covers everything a job pays on this node: staging the work area,
create/init/start through the API, log streaming, wait, inspect, packing outputs,
removal and work-area cleanup. The bare figure is the podman CLI with the same image
and command, network none.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from pack_manager.base_image import BASE_IMAGE, ensure_base_image
from pack_manager.executors import run_job
from pack_manager.executors.podman_executor import PodmanExecutor
from pack_manager.jobspec import JobSpec
from pack_manager.podman_service import start_service, stop_service

COMMAND = ["sh", "-c", "echo hello > /data/outputs/hello.txt; echo done"]


def bare_run() -> float:
    started = time.monotonic()
    subprocess.run(["podman", "run", "--rm", "--network", "none", BASE_IMAGE, *COMMAND],
                   check=True, capture_output=True)
    return time.monotonic() - started


async def executor_run(url: str, scratch: Path, index: int) -> float:
    spec = JobSpec(kind="run", submitter=bytes(32), nonce=index.to_bytes(16, "big"), image=BASE_IMAGE,
                   command=tuple(COMMAND), timeout_ms=60_000)

    async def log(_line: str) -> None:
        pass

    started = time.monotonic()
    result = await run_job(PodmanExecutor(url), spec, scratch / f"work{index}", scratch / f"result{index}",
                           lambda _digest: None, log, trio.Event())
    elapsed = time.monotonic() - started
    if result.state != "succeeded":
        raise SystemExit(f"executor run failed: {result.reason}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="formnet-bench-") as tmp:
        scratch = Path(tmp)
        process, url = start_service(scratch / "state")
        try:
            ensure_base_image(url)
            bare_run()  # warm caches for both
            trio.run(executor_run, url, scratch, 999)
            bare, ours = [], []
            for index in range(args.runs):  # interleaved so drift hits both alike
                bare.append(bare_run())
                ours.append(trio.run(executor_run, url, scratch, index))
        finally:
            stop_service(process, scratch / "state")
    bare_median, ours_median = statistics.median(bare), statistics.median(ours)
    print(f"bare podman run --rm : median {bare_median * 1000:7.1f} ms over {args.runs} runs")
    print(f"podman executor      : median {ours_median * 1000:7.1f} ms over {args.runs} runs")
    print(f"overhead ratio       : {ours_median / bare_median:.2f}x (goal <= 1.30x)")


if __name__ == "__main__":
    main()
