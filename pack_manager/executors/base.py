"""The executor contract: one interface, a Podman and a WASM implementation.

An executor is given a JobSpec, a staged WorkArea, a log sink and a cancel event, and
returns an ExecutionResult. It never raises for anything the job did (bad exit, trap,
timeout, out of memory, missing image): those are results with a reason. It cleans up
whatever it started before returning, also when it is itself cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import trio

from ..jobspec import JobSpec
from ..jobstate import CANCELLED, FAILED, FINAL_STATES, SUCCEEDED, TIMED_OUT  # noqa: F401 - result states

OUTPUTS_TAR = "outputs.tar"
IMAGE_ARCHIVE = "image.oci.tar"

LogSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ExecutorLimits:
    """Node-side bounds that apply to every job, whatever it asks for."""

    max_context_bytes: int = 256 * 1024**2
    max_input_bytes: int = 1024**3
    max_output_bytes: int = 1024**3
    pids_limit: int = 512
    nofile: int = 1024  # must stay at or below the host's hard limit (no CAP_SYS_RESOURCE)
    nproc: int = 4096  # counted per uid on the host; equal to the hard limit is refused
    stop_grace_s: float = 2.0  # SIGTERM to SIGKILL on cancel
    run_user: str = "65534:65534"  # used when the image does not name a non-root user
    max_log_line: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class OutputFile:
    name: str  # OUTPUTS_TAR or IMAGE_ARCHIVE
    digest: str  # blake3 hex
    size: int
    path: Path  # where the caller asked results to go

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    state: str  # one of FINAL_STATES
    reason: str
    exit_code: int | None = None
    duration_s: float = 0.0
    outputs: tuple[OutputFile, ...] = ()
    image_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "duration_ms": int(self.duration_s * 1000),
            "outputs": [item.to_wire() for item in self.outputs],
            "image_id": self.image_id,
        }


@dataclass(frozen=True, slots=True)
class WorkArea:
    """Where one job's files live on this node. cleanup() removes root; result_dir stays."""

    root: Path
    inputs_dir: Path  # mounted read-only at /data/inputs
    outputs_dir: Path  # mounted read-write at /data/outputs
    scratch_dir: Path
    result_dir: Path  # the caller's: outputs.tar and image archives are written here
    context_tar: Path | None = None  # the validated context blob (builds send it as is)
    context_dir: Path | None = None  # the extracted context (run and wasm jobs): /data/context
    module_path: Path | None = None  # wasm jobs
    gpus: tuple["JobGpu", ...] = ()  # reserved for this run by the job loop (Podman jobs)


@dataclass(frozen=True, slots=True)
class JobGpu:
    """One GPU reserved for a run: its NVML index, UUID and the CDI device that injects it."""

    index: int
    uuid: str
    cdi_device: str


class Executor(Protocol):
    name: str

    async def execute(
        self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event
    ) -> ExecutionResult: ...


class LineSplitter:
    """Bytes from a stream -> whole text lines; over-long lines are cut, not buffered forever."""

    def __init__(self, max_line: int) -> None:
        self._buffer = b""
        self._max = max_line

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        lines: list[str] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                if len(self._buffer) >= self._max:
                    cut = self._max
                    lines.append(self._buffer[:cut].decode("utf-8", "replace"))
                    self._buffer = self._buffer[cut:]
                    continue
                return lines
            raw = self._buffer[:cut]
            self._buffer = self._buffer[cut + 1 :]
            for start in range(0, max(len(raw), 1), self._max):
                lines.append(raw[start : start + self._max].decode("utf-8", "replace").rstrip("\r"))

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [rest.decode("utf-8", "replace")] if rest else []
