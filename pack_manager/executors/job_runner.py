"""One job, start to finish on this node: stage, execute, clean up, always."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio

from ..jobspec import JobSpec
from .base import FAILED, ExecutionResult, Executor, ExecutorLimits, JobGpu, LogSink
from .staging import BlobLookup, StagingError, remove_tree, stage_work_area


async def run_job(
    executor: Executor,
    spec: JobSpec,
    work_root: Path,
    result_dir: Path,
    blob_path: BlobLookup,
    log: LogSink,
    cancel: trio.Event,
    limits: ExecutorLimits | None = None,
    gpus: tuple[JobGpu, ...] = (),
) -> ExecutionResult:
    """work_root is created and removed here; result_dir (outputs.tar, image archives) stays.

    Bad input (a context that breaks the archive rules, a missing blob, a module outside the
    context) is a FAILED result whose reason starts with "rejected", and nothing has run.
    """
    limits = limits or ExecutorLimits()
    if executor.name != spec.requirements.executor:
        return ExecutionResult(
            FAILED, f"rejected: the job needs the {spec.requirements.executor} executor, not {executor.name}"
        )
    run_whole = getattr(executor, "run_whole", None)
    if run_whole is not None:  # stages, runs and cleans up itself, in fewer thread trips (WASM)
        return await run_whole(spec, work_root, result_dir, blob_path, log, cancel, limits)
    try:
        try:
            work = await trio.to_thread.run_sync(
                stage_work_area, spec, work_root, result_dir, blob_path, limits
            )
        except StagingError as exc:
            return ExecutionResult(FAILED, f"rejected before running: {exc}")
        return await executor.execute(spec, replace(work, gpus=gpus), log, cancel)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(remove_tree, work_root)
