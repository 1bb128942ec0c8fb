"""The WASM executor: a WASI module under wasmtime, in a worker thread.

The sandbox is the module's own: it sees /data/inputs (read-only), /data/outputs and its
context at /data/context (this run's own copy) and nothing else, its linear memory is
capped at the job's memory requirement, and an epoch deadline stops it: when the job's
timeout passes or it is cancelled, the trio side bumps the epoch of the engine the guest
runs on and the guest traps at its next check, wherever it is looping. Engines, their WASI
linkers and loaded modules are kept per worker thread, and a bump reaches only the guest
that thread runs now (wasm_engines.GuestHandle). Compiling a module costs ~1 ms even for a
tiny one; its compiled form is kept (CompiledModules).

A whole job takes one worker-thread trip (`run_whole`, which run_job uses): staging the work
area, the guest, packing its outputs and removing the work area. A trip to a thread and back
cost about as much as a no-op guest, and the old path made five.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import trio
import wasmtime

from metrics_agent.units import format_bytes

from ..context_archive import ArchiveError
from ..jobspec import JobSpec
from .base import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionResult,
    ExecutorLimits,
    LineSplitter,
    LogSink,
    WorkArea,
)
from .outputs import pack_outputs
from .podman_options import CONTEXT_MOUNT, INPUTS_MOUNT, OUTPUTS_MOUNT
from .staging import BlobLookup, StagingError, remove_tree, stage_work_area
from .supervise import supervise
from .thread_lines import ThreadLines
from .wasm_engines import CompiledModules, GuestHandle, ThreadEngines, new_engine

__all__ = ["WasmExecutor", "CompiledModules", "new_engine"]

MAX_INSTANCES = 10
MAX_TABLE_ELEMENTS = 1_000_000

# The blocking part of a job, run in a worker thread: (guest handle, log line sender) -> result.
Body = Callable[[GuestHandle, Callable[[str], None]], ExecutionResult]


class WasmExecutor:
    name = "wasm"

    def __init__(self, limits: ExecutorLimits | None = None) -> None:
        self.limits = limits or ExecutorLimits()
        self.modules = CompiledModules()
        self.engines = ThreadEngines()

    async def execute(
        self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event
    ) -> ExecutionResult:
        """The Executor contract: a work area staged by the caller."""
        if spec.kind != "wasm" or work.module_path is None:
            return ExecutionResult(
                FAILED, f"the wasm executor runs wasm jobs with a staged module, not {spec.kind}"
            )
        return await self._supervised(
            spec, log, cancel, lambda guest, send: self._guest_and_outputs(guest, spec, work, send)
        )

    async def run_whole(
        self,
        spec: JobSpec,
        work_root: Path,
        result_dir: Path,
        blob_path: BlobLookup,
        log: LogSink,
        cancel: trio.Event,
        limits: ExecutorLimits,
    ) -> ExecutionResult:
        """run_job's work in one thread trip: stage, run, pack the outputs, remove work_root."""

        def body(guest: GuestHandle, send: Callable[[str], None]) -> ExecutionResult:
            try:
                try:
                    work = stage_work_area(spec, work_root, result_dir, blob_path, limits)
                except StagingError as exc:
                    return ExecutionResult(FAILED, f"rejected before running: {exc}")
                if work.module_path is None:
                    return ExecutionResult(
                        FAILED, f"the wasm executor runs wasm jobs with a staged module, not {spec.kind}"
                    )
                return self._guest_and_outputs(guest, spec, work, send)
            finally:
                remove_tree(work_root)

        return await self._supervised(spec, log, cancel, body)

    async def _supervised(
        self, spec: JobSpec, log: LogSink, cancel: trio.Event, body: Body
    ) -> ExecutionResult:
        """Run body in a worker thread under the job's deadline and cancel event; its log
        lines go to `log` as they come."""
        started = time.monotonic()
        guest = GuestHandle()
        outcome: list[ExecutionResult] = []
        body_done = trio.Event()
        lines = ThreadLines()  # wasmtime may call the output hooks from threads of its own

        async def run_body() -> None:
            # Not abandoned on cancel (wasmtime state lives in the thread, and the thread
            # removes the work area): we interrupt the guest instead and wait for the thread.
            try:
                outcome.append(await trio.to_thread.run_sync(body, guest, lines.send))
            finally:
                lines.close()
                body_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lines.deliver, log)
            nursery.start_soon(run_body)
            try:
                ended_by = await supervise(body_done.wait, spec.timeout_s, cancel)
            finally:
                if not body_done.is_set():  # also when we ourselves are cancelled
                    guest.stop()
        result = outcome[0]
        if ended_by != SUCCEEDED:
            for item in result.outputs:  # packed just before the stop came: not this job's result
                item.path.unlink(missing_ok=True)
            if ended_by == CANCELLED:
                result = ExecutionResult(CANCELLED, "cancelled: the module was interrupted")
            else:
                result = ExecutionResult(
                    TIMED_OUT, f"timed out after {spec.timeout_s:g} s: the module was interrupted"
                )
        return replace(result, duration_s=time.monotonic() - started)

    def _guest_and_outputs(
        self, guest: GuestHandle, spec: JobSpec, work: WorkArea, send: Callable[[str], None]
    ) -> ExecutionResult:
        """Blocking: run the guest, then pack what it left in its outputs dir."""
        state, reason, code = self._run_module(guest, spec, work, send)
        if guest.stopped:  # interrupted: the caller says why, and nothing of it is kept
            return ExecutionResult(state, reason, exit_code=code)
        try:
            outputs = pack_outputs(work, self.limits, strict=state == SUCCEEDED)
        except ArchiveError as exc:
            return ExecutionResult(FAILED, f"outputs refused: {exc}", exit_code=code)
        return ExecutionResult(state, reason, exit_code=code, outputs=outputs)

    def _run_module(
        self,
        guest: GuestHandle,
        spec: JobSpec,
        work: WorkArea,
        send: Callable[[str], None],
    ) -> tuple[str, str, int | None]:
        """Blocking: instantiate and run _start on this thread's engine. Returns (state, reason, exit code)."""
        engine = self.engines.current()
        store = wasmtime.Store(engine.engine)
        memory_cap = spec.requirements.memory_bytes or -1
        store.set_limits(memory_size=memory_cap, instances=MAX_INSTANCES, table_elements=MAX_TABLE_ELEMENTS)
        store.set_epoch_deadline(1)
        if not guest.attach(engine.engine):  # after the deadline is set: see GuestHandle
            return FAILED, "interrupted before start", None
        out = LineSplitter(self.limits.max_log_line)
        err = LineSplitter(self.limits.max_log_line)

        def emit(splitter: LineSplitter, prefix: str) -> Callable[[bytes], None]:
            def write(data: bytes) -> None:
                for line in splitter.feed(data):
                    send(prefix + line)

            return write

        try:
            wasi = wasmtime.WasiConfig()
            wasi.argv = [str(work.module_path.name), *spec.command]  # type: ignore[union-attr]
            wasi.env = list(spec.env.items())
            wasi.preopen_dir(str(work.inputs_dir), INPUTS_MOUNT, False)
            wasi.preopen_dir(str(work.outputs_dir), OUTPUTS_MOUNT, True)
            if work.context_dir is not None:
                wasi.preopen_dir(str(work.context_dir), CONTEXT_MOUNT, True)
            wasi.stdout_custom = emit(out, "")
            wasi.stderr_custom = emit(err, "stderr: ")
            store.set_wasi(wasi)
            try:
                wasm = work.module_path.read_bytes()  # type: ignore[union-attr]
                module = engine.module(self.modules, wasm)
            except wasmtime.WasmtimeError as exc:
                return FAILED, f"not a valid WebAssembly module: {_first_line(exc)}", None
            try:
                instance = engine.linker.instantiate(store, module)
            except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
                text = _first_line(exc)
                if "memory" in text and ("limit" in text or "exceeds" in text or "minimum" in text):
                    return (
                        FAILED,
                        (
                            f"memory limit: the module needs more than the "
                            f"{format_bytes(spec.requirements.memory_bytes)} cap ({text})"
                        ),
                        None,
                    )
                return FAILED, f"could not instantiate the module: {text}", None
            start = instance.exports(store).get("_start")
            if not isinstance(start, wasmtime.Func):
                return FAILED, "the module exports no _start function (build it as a WASI command)", None
            try:
                start(store)
            except wasmtime.ExitTrap as exc:
                if exc.code == 0:
                    return SUCCEEDED, "exited with code 0", 0
                return FAILED, f"the module exited with code {exc.code}", exc.code
            except wasmtime.Trap as exc:
                if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                    return FAILED, "interrupted", None  # replaced by timed_out / cancelled by the caller
                return FAILED, f"trap: {_trap_text(exc)}", None
            except wasmtime.WasmtimeError as exc:
                return FAILED, f"error: {_first_line(exc)}", None
            return SUCCEEDED, "returned from _start", 0
        finally:
            guest.detach()
            for line in out.flush():
                send(line)
            for line in err.flush():
                send("stderr: " + line)


def _trap_text(exc: BaseException) -> str:
    """wasmtime's trap text is a backtrace; the cause is the line that says 'wasm trap'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "wasm trap" in line:
            return line.split("wasm trap:", 1)[-1].strip()
    return lines[-1] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
