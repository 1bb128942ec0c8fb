"""Executors: where a job's work actually happens (Podman build/run, WASM sandbox)."""

from .base import (
    CANCELLED,
    FAILED,
    FINAL_STATES,
    IMAGE_ARCHIVE,
    OUTPUTS_TAR,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionResult,
    Executor,
    ExecutorLimits,
    LogSink,
    OutputFile,
    WorkArea,
)
from .job_runner import run_job
from .staging import StagingError, stage_work_area

__all__ = [
    "CANCELLED",
    "FAILED",
    "FINAL_STATES",
    "IMAGE_ARCHIVE",
    "OUTPUTS_TAR",
    "SUCCEEDED",
    "TIMED_OUT",
    "ExecutionResult",
    "Executor",
    "ExecutorLimits",
    "LogSink",
    "OutputFile",
    "WorkArea",
    "StagingError",
    "stage_work_area",
    "run_job",
]
