"""Overhead of the Podman executor against a bare `podman run --rm` of the same short
container, measured in this run (median of several, interleaved). Goal: ratio <= 1.3.

    python -m simulations.bench_executor [--runs 9]

"The same container" includes its cpu and memory limits: a job's default requirements
(cpu 100m, memory 128 MiB) put the container under a 0.1-CPU quota, and that quota alone
slows the container's own start (runc init runs inside its cgroup) by 100-200 ms here,
for the CLI as much as for the executor. So both scenarios are measured, each with the
same limits on every side:
- no cpu cap:    the job asks for cpu 0 (no quota) and memory 128 MiB;
- job defaults:  cpu 100m (0.1-CPU quota) and memory 128 MiB.

Figures per scenario, all for the same image, command and limits:
- bare:     `podman run --rm --network none` with the job's --cpus/--memory (the goal's
            baseline).
- matched:  the same CLI run plus the isolation the executor asks for: user nobody, all
            capabilities dropped, no-new-privileges, pids limit, explicit ulimits, the
            inputs (read-only) and outputs dirs bind-mounted.
- api-min:  the executor's container lifecycle with nothing else, through the same API
            service: create, attach, start, read the output, exit code, remove.
- executor: run_job with the Podman executor: everything a job pays on this node. On top
            of what the runs above do: staging the work area, the image lookup that picks a
            non-root user, arming the OOM watch (an inspect and a cgroup eventfd), log lines
            into a sink, packing and digesting the outputs, removing the work area.

The CLI runs pay a podman process start (~30 ms here) that the executor does not: it talks
to a long-running API service. The machine may be shared: run it more than once.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import trio
from podman import PodmanClient

from pack_manager.base_image import BASE_IMAGE, ensure_base_image
from pack_manager.executors import run_job
from pack_manager.executors.base import ExecutorLimits, WorkArea
from pack_manager.executors.podman_executor import PodmanExecutor, _create, _exit_state
from pack_manager.executors.podman_options import INPUTS_MOUNT, OUTPUTS_MOUNT, run_options
from pack_manager.executors.staging import remove_tree, stage_work_area
from pack_manager.jobspec import JobSpec
from pack_manager.podman_service import start_service, stop_service
from pack_manager.requirements import WorkloadRequirements

COMMAND = ["sh", "-c", "echo hello > /data/outputs/hello.txt; echo done"]
LIMITS = ExecutorLimits()
SCENARIOS = {
    "no cpu cap (cpu 0, memory 128MiB)": WorkloadRequirements.from_human(cpu="0", memory="128MiB"),
    "job defaults (cpu 100m, memory 128MiB)": WorkloadRequirements(),
}


def spec_for(requirements: WorkloadRequirements, index: int) -> JobSpec:
    return JobSpec(
        kind="run",
        submitter=bytes(32),
        nonce=index.to_bytes(16, "big"),
        image=BASE_IMAGE,
        command=tuple(COMMAND),
        timeout_ms=60_000,
        requirements=requirements,
    )


def limit_flags(requirements: WorkloadRequirements) -> list[str]:
    """The job's cpu and memory limits as CLI flags (the same values run_options sends)."""
    flags = []
    if requirements.cpu_millicores:
        flags += ["--cpus", f"{requirements.cpu_millicores / 1000:g}"]
    if requirements.memory_bytes:
        flags += ["--memory", str(requirements.memory_bytes), "--memory-swap", str(requirements.memory_bytes)]
    return flags


def bare_run(requirements: WorkloadRequirements, _scratch: Path, _index: int) -> float:
    started = time.monotonic()
    subprocess.run(
        ["podman", "run", "--rm", "--network", "none", *limit_flags(requirements), BASE_IMAGE, *COMMAND],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def matched_run(requirements: WorkloadRequirements, scratch: Path, index: int) -> float:
    work = stage_work_area(
        spec_for(requirements, index),
        scratch / f"matched{index}",
        scratch / f"matched-result{index}",
        lambda _digest: None,
        LIMITS,
    )
    started = time.monotonic()
    subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            *limit_flags(requirements),
            "--user",
            LIMITS.run_user,
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            str(LIMITS.pids_limit),
            "--ulimit",
            f"nofile={LIMITS.nofile}:{LIMITS.nofile}",
            "--ulimit",
            f"nproc={LIMITS.nproc}:{LIMITS.nproc}",
            "-v",
            f"{work.inputs_dir}:{INPUTS_MOUNT}:ro",
            "-v",
            f"{work.outputs_dir}:{OUTPUTS_MOUNT}",
            BASE_IMAGE,
            *COMMAND,
        ],
        check=True,
        capture_output=True,
    )
    elapsed = time.monotonic() - started
    remove_tree(work.root)
    return elapsed


def api_min_run(url: str, requirements: WorkloadRequirements, scratch: Path, index: int) -> float:
    spec = spec_for(requirements, index)
    work: WorkArea = stage_work_area(
        spec, scratch / f"api{index}", scratch / f"api-result{index}", lambda _digest: None, LIMITS
    )
    executor = PodmanExecutor(url)
    started = time.monotonic()
    with PodmanClient(base_url=url, timeout=60) as client:
        container = _create(client, run_options(spec, work, LIMITS, LIMITS.run_user, f"bench-api-{index}"))
        try:
            stream = executor._attach(client, container.id)
            container.start()
            executor._read_stream(stream, lambda _line: None)
            stream.close()
            if _exit_state(container).get("ExitCode") != 0:
                raise SystemExit("api-min run failed")
        finally:
            container.remove(force=True, v=True)
    elapsed = time.monotonic() - started
    remove_tree(work.root)
    return elapsed


async def executor_run(url: str, requirements: WorkloadRequirements, scratch: Path, index: int) -> float:
    async def log(_line: str) -> None:
        pass

    started = time.monotonic()
    result = await run_job(
        PodmanExecutor(url),
        spec_for(requirements, index),
        scratch / f"work{index}",
        scratch / f"result{index}",
        lambda _digest: None,
        log,
        trio.Event(),
    )
    elapsed = time.monotonic() - started
    if result.state != "succeeded":
        raise SystemExit(f"executor run failed: {result.reason}")
    return elapsed


def measure(url: str, requirements: WorkloadRequirements, scratch: Path, runs: int) -> dict[str, list[float]]:
    kinds: dict[str, Callable[[Path, int], float]] = {
        "bare podman run --rm": lambda s, i: bare_run(requirements, s, i),
        "matched podman run --rm": lambda s, i: matched_run(requirements, s, i),
        "api-min (same service)": lambda s, i: api_min_run(url, requirements, s, i),
        "podman executor": lambda s, i: trio.run(executor_run, url, requirements, s, i),
    }
    for run in kinds.values():  # warm caches for all
        run(scratch, 10_000)
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for index in range(runs):  # interleaved so drift hits all alike
        for name, run in kinds.items():
            times[name].append(run(scratch, index))
    return times


def report(title: str, times: dict[str, list[float]], runs: int) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{title}:")
    for name, values in times.items():
        print(
            f"  {name:24s}: median {medians[name] * 1000:7.1f} ms  (min {min(values) * 1000:6.1f}, "
            f"max {max(values) * 1000:6.1f}) over {runs} runs"
        )
    ours = medians["podman executor"]
    print(f"  overhead ratio vs bare    : {ours / medians['bare podman run --rm']:.2f}x (goal <= 1.30x)")
    print(f"  overhead ratio vs matched : {ours / medians['matched podman run --rm']:.2f}x")
    print(f"  overhead ratio vs api-min : {ours / medians['api-min (same service)']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="formnet-bench-") as tmp:
        scratch = Path(tmp)
        process, url = start_service(scratch / "state")
        try:
            ensure_base_image(url)
            for title, requirements in SCENARIOS.items():
                results[title] = measure(url, requirements, scratch, args.runs)
        finally:
            stop_service(process, scratch / "state")
    for title, times in results.items():
        report(title, times, args.runs)


if __name__ == "__main__":
    main()
