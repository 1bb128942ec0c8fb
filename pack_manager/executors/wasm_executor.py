"""The WASM executor: a WASI module under wasmtime, in a worker thread.

The sandbox is the module's own: it sees /data/inputs (read-only) and /data/outputs and
nothing else, its linear memory is capped at the job's memory requirement, and an epoch
deadline stops it: when the job's timeout passes or it is cancelled, the trio side bumps
the engine's epoch and the guest traps at its next check, wherever it is looping.

An engine per job, since bumping a shared engine's epoch would interrupt every guest. Compiling
a module costs ~1 ms even for a tiny one; its compiled form is kept (CompiledModules) and
loaded into the next job's engine in ~0.1 ms. Only bytes this process compiled are ever
deserialized (wasmtime trusts them), looked up by blake3 of the module file.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Callable

import blake3
import trio
import wasmtime

from metrics_agent.units import format_bytes

from ..context_archive import ArchiveError
from ..jobspec import JobSpec
from .base import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, ExecutionResult, ExecutorLimits, LineSplitter, LogSink, WorkArea
from .outputs import collect_outputs
from .podman_options import INPUTS_MOUNT, OUTPUTS_MOUNT
from .supervise import supervise

MAX_INSTANCES = 10
MAX_TABLE_ELEMENTS = 1_000_000
COMPILED_CACHE_BYTES = 64 * 1024 * 1024


def new_engine() -> wasmtime.Engine:
    """Every engine has this one configuration, so a module compiled in one loads in any."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    return wasmtime.Engine(config)


class CompiledModules:
    """Compiled modules by blake3 of their bytes, least recently used dropped past a byte
    budget. Used from worker threads, hence the lock."""

    def __init__(self, max_bytes: int = COMPILED_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._compiled: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.compiled = 0  # how many times a module had to be compiled

    def load(self, engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
        """Raises wasmtime.WasmtimeError for bytes that are not a valid module."""
        digest = blake3.blake3(wasm).digest()
        with self._lock:
            serialized = self._compiled.get(digest)
            if serialized is not None:
                self._compiled.move_to_end(digest)
        if serialized is not None:
            return wasmtime.Module.deserialize(engine, serialized)
        module = wasmtime.Module(engine, wasm)
        serialized = module.serialize()
        with self._lock:
            self.compiled += 1
            if digest not in self._compiled and len(serialized) <= self.max_bytes:
                self._compiled[digest] = serialized
                self._bytes += len(serialized)
                while self._bytes > self.max_bytes:
                    self._bytes -= len(self._compiled.popitem(last=False)[1])
        return module


class WasmExecutor:
    name = "wasm"

    def __init__(self, limits: ExecutorLimits | None = None) -> None:
        self.limits = limits or ExecutorLimits()
        self.modules = CompiledModules()

    async def execute(self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event) -> ExecutionResult:
        started = time.monotonic()
        result = await self._execute(spec, work, log, cancel)
        return replace(result, duration_s=time.monotonic() - started)

    async def _execute(self, spec: JobSpec, work: WorkArea, log: LogSink, cancel: trio.Event) -> ExecutionResult:
        if spec.kind != "wasm" or work.module_path is None:
            return ExecutionResult(FAILED, f"the wasm executor runs wasm jobs with a staged module, not {spec.kind}")
        engine = new_engine()
        stop = threading.Event()
        outcome: list[tuple[str, str, int | None]] = []
        guest_done = trio.Event()
        send_channel, receive_channel = trio.open_memory_channel[str](1024)
        token = trio.lowlevel.current_trio_token()

        def send(line: str) -> None:
            # wasmtime may call the output hooks from threads of its own, hence the token.
            try:
                trio.from_thread.run(send_channel.send, line, trio_token=token)
            except (trio.Cancelled, trio.ClosedResourceError, trio.RunFinishedError, trio.BrokenResourceError):
                pass

        async def run_guest() -> None:
            # Not abandoned on cancel (wasmtime state lives in the thread): we interrupt the
            # guest instead and wait for the thread to return.
            try:
                outcome.append(await trio.to_thread.run_sync(self._run_module, engine, stop, spec, work, send))
            finally:
                send_channel.close()
                guest_done.set()

        async def deliver() -> None:
            async for line in receive_channel:
                await log(line)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            nursery.start_soon(run_guest)
            try:
                ended_by = await supervise(guest_done.wait, spec.timeout_s, cancel)
            finally:
                if not guest_done.is_set():  # also when we ourselves are cancelled
                    stop.set()
                    engine.increment_epoch()
        state, reason, code = outcome[0]
        if ended_by == CANCELLED:
            return ExecutionResult(CANCELLED, "cancelled: the module was interrupted")
        if ended_by == TIMED_OUT:
            return ExecutionResult(TIMED_OUT, f"timed out after {spec.timeout_s:g} s: the module was interrupted")
        try:
            outputs = await collect_outputs(work, self.limits, strict=state == SUCCEEDED)
        except ArchiveError as exc:
            return ExecutionResult(FAILED, f"outputs refused: {exc}", exit_code=code)
        return ExecutionResult(state, reason, exit_code=code, outputs=outputs)

    def _run_module(
        self, engine: wasmtime.Engine, stop: threading.Event, spec: JobSpec, work: WorkArea,
        send: Callable[[str], None],
    ) -> tuple[str, str, int | None]:
        """Blocking: compile, instantiate and run _start. Returns (state, reason, exit code)."""
        store = wasmtime.Store(engine)
        memory_cap = spec.requirements.memory_bytes or -1
        store.set_limits(memory_size=memory_cap, instances=MAX_INSTANCES, table_elements=MAX_TABLE_ELEMENTS)
        store.set_epoch_deadline(1)
        # The stopper sets the flag before bumping the epoch: either we see the flag here, or
        # our deadline was set before the bump and the guest traps at its first check.
        if stop.is_set():
            return FAILED, "interrupted before start", None
        out = LineSplitter(self.limits.max_log_line)
        err = LineSplitter(self.limits.max_log_line)

        def emit(splitter: LineSplitter, prefix: str) -> Callable[[bytes], None]:
            def write(data: bytes) -> None:
                for line in splitter.feed(data):
                    send(prefix + line)
            return write

        wasi = wasmtime.WasiConfig()
        wasi.argv = [str(work.module_path.name), *spec.command]  # type: ignore[union-attr]
        wasi.env = list(spec.env.items())
        wasi.preopen_dir(str(work.inputs_dir), INPUTS_MOUNT, False)
        wasi.preopen_dir(str(work.outputs_dir), OUTPUTS_MOUNT, True)
        wasi.stdout_custom = emit(out, "")
        wasi.stderr_custom = emit(err, "stderr: ")
        store.set_wasi(wasi)
        try:
            try:
                wasm = work.module_bytes if work.module_bytes is not None else work.module_path.read_bytes()  # type: ignore[union-attr]
                module = self.modules.load(engine, wasm)
            except wasmtime.WasmtimeError as exc:
                return FAILED, f"not a valid WebAssembly module: {_first_line(exc)}", None
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            try:
                instance = linker.instantiate(store, module)
            except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
                text = _first_line(exc)
                if "memory" in text and ("limit" in text or "exceeds" in text or "minimum" in text):
                    return FAILED, (f"memory limit: the module needs more than the "
                                    f"{format_bytes(spec.requirements.memory_bytes)} cap ({text})"), None
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
