"""The simulation's executor: "runs" a job for a simulated duration, no sandbox involved.

What it would do is written in the job spec itself (env, set by the workload), so whichever
node runs the job does the same thing:

    SIM_DURATION_MS   how long the run takes, in simulated time
    SIM_EXIT          the exit code (0: succeeded, anything else: failed)

A successful run writes one file whose content is a function of the job id alone, and
packs it with the real outputs code, so every node that runs a job produces the same
outputs.tar digest and hence the same result digest (replicas verify). It honours the
cancel event and the spec's timeout like the real executors.

`on_run(spec)` is called as a run starts and the function it returns as the run ends, however
it ends (a crash cancels it): the harness sees every instant a node is running a job.
"""

from __future__ import annotations

from typing import Callable

import trio

from pack_manager.executors.base import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionResult,
    ExecutorLimits,
    LogSink,
    WorkArea,
)
from pack_manager.executors.outputs import collect_outputs
from pack_manager.jobspec import JobSpec

DURATION_ENV = "SIM_DURATION_MS"
EXIT_ENV = "SIM_EXIT"


class SimulatedExecutor:
    name = "wasm"

    def __init__(
        self,
        limits: ExecutorLimits | None = None,
        on_run: Callable[[JobSpec], Callable[[], None]] | None = None,
    ) -> None:
        self.limits = limits or ExecutorLimits()
        self.on_run = on_run
        self.started = 0

    async def execute(
        self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event
    ) -> ExecutionResult:
        self.started += 1
        if self.on_run is None:
            return await self._execute(spec, work, log, cancel)
        ended = self.on_run(spec)
        try:
            return await self._execute(spec, work, log, cancel)
        finally:
            ended()

    async def _execute(
        self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event
    ) -> ExecutionResult:
        duration = int(spec.env.get(DURATION_ENV, "1000")) / 1000
        exit_code = int(spec.env.get(EXIT_ENV, "0"))
        await log(f"simulated run of {duration:g} s")
        deadline = min(duration, spec.timeout_s)
        with trio.move_on_after(deadline):
            await cancel.wait()
            return ExecutionResult(CANCELLED, "cancelled while running", duration_s=0.0)
        if duration > spec.timeout_s:
            return ExecutionResult(
                TIMED_OUT, f"ran past its {spec.timeout_s:g} s timeout", duration_s=spec.timeout_s
            )
        if exit_code != 0:
            return ExecutionResult(
                FAILED, f"exited with code {exit_code}", exit_code=exit_code, duration_s=duration
            )
        (work.outputs_dir / "result.txt").write_text(f"result of {spec.job_id().hex()}\n", encoding="utf-8")
        outputs = await collect_outputs(work, self.limits, strict=True)
        return ExecutionResult(
            SUCCEEDED, "simulated run finished", exit_code=0, duration_s=duration, outputs=outputs
        )
