"""The WASM executor with real wasmtime: a real C program compiled to wasm32-wasi, and WAT
modules for the failure modes (deadline, memory cap, traps, exit codes, cancel)."""

import io
import subprocess
import tarfile

import blake3
import pytest
import trio
from executor_blobs import Blobs
from wasm_jobs import LOOP_FOREVER, WASM_DIR

from pack_manager.executors import CANCELLED, FAILED, OUTPUTS_TAR, SUCCEEDED, TIMED_OUT, run_job
from pack_manager.executors.wasm_executor import WasmExecutor
from pack_manager.jobspec import JobInput, JobSpec
from pack_manager.requirements import WorkloadRequirements

TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'
BIG_MEMORY = '(module (memory (export "memory") 1024) (func (export "_start")))'  # 64 MiB
GROW_PAST_CAP = """(module (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1)) (then unreachable))))"""
EXIT_3 = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"""
HELLO = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wat\\npartial")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 22))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


@pytest.fixture(scope="session")
def c_modules(tmp_path_factory):
    out = tmp_path_factory.mktemp("wasm-build")
    subprocess.run(["bash", str(WASM_DIR / "build.sh"), str(out)], check=True)
    return out


async def execute(
    tmp_path,
    module_bytes: bytes,
    *,
    memory="128MiB",
    timeout_ms=10_000,
    inputs=(),
    command=(),
    cancel=None,
    blobs=None,
    executor=None,
):
    blobs = blobs or Blobs(tmp_path / "blobs")
    spec = JobSpec(
        kind="wasm",
        submitter=bytes(32),
        nonce=bytes(16),
        module=blobs.put(module_bytes),
        command=tuple(command),
        inputs=tuple(inputs),
        timeout_ms=timeout_ms,
        requirements=WorkloadRequirements.from_human(memory=memory, executor="wasm"),
    )
    lines = []

    async def log(line):
        lines.append(line)

    work = tmp_path / "work"
    result = await run_job(
        executor or WasmExecutor(),
        spec,
        work,
        tmp_path / "result",
        blobs.path,
        log,
        cancel if cancel is not None else trio.Event(),
    )
    assert not work.exists(), "the work area must be removed"
    return result, lines


def outputs_of(result):
    [tarball] = [item for item in result.outputs if item.name == OUTPUTS_TAR]
    assert blake3.blake3(tarball.path.read_bytes()).hexdigest() == tarball.digest
    with tarfile.open(tarball.path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


@pytest.mark.wasi
async def test_c_program_transforms_an_input_into_an_output(tmp_path, c_modules):
    blobs = Blobs(tmp_path / "blobs")
    text = b"formnet runs wasm\n"
    result, lines = await execute(
        tmp_path,
        (c_modules / "upcase.wasm").read_bytes(),
        blobs=blobs,
        inputs=[JobInput("notes.txt", blobs.put(text))],
        command=["notes.txt"],
    )
    assert result.state == SUCCEEDED, result.reason
    assert result.exit_code == 0
    assert "inputs are read-only" in lines
    assert f"converted {len(text)} bytes" in lines
    assert outputs_of(result) == {"notes.txt.upper": text.upper()}


@pytest.mark.wasi
async def test_c_program_failure_is_reported_with_its_exit_code(tmp_path, c_modules):
    result, lines = await execute(tmp_path, (c_modules / "upcase.wasm").read_bytes(), command=["missing.txt"])
    assert result.state == FAILED
    assert result.exit_code == 1
    assert "exited with code 1" in result.reason
    assert "stderr: cannot open /data/inputs/missing.txt" in lines


async def test_stdout_becomes_log_lines(tmp_path):
    result, lines = await execute(tmp_path, HELLO.encode())
    assert result.state == SUCCEEDED, result.reason
    assert lines == ["hello from wat", "partial"]


async def test_a_module_is_compiled_once_and_each_job_still_runs_it_in_its_own_sandbox(tmp_path):
    executor = WasmExecutor()
    first, first_lines = await execute(tmp_path / "a", HELLO.encode(), executor=executor)
    again, again_lines = await execute(tmp_path / "b", HELLO.encode(), executor=executor)
    assert first.state == again.state == SUCCEEDED
    assert first_lines == again_lines == ["hello from wat", "partial"]
    assert executor.modules.compiled == 1
    exited, _ = await execute(tmp_path / "c", EXIT_3.encode(), executor=executor)  # another module
    assert exited.state == FAILED and exited.exit_code == 3 and executor.modules.compiled == 2
    garbage, _ = await execute(tmp_path / "d", b"\x00asm but not really", executor=executor)
    assert garbage.state == FAILED and "not a valid WebAssembly module" in garbage.reason
    # The memory cap is the store's, not the compiled module's: a cached module is capped too.
    roomy, _ = await execute(tmp_path / "e", BIG_MEMORY.encode(), memory="128MiB", executor=executor)
    capped, _ = await execute(tmp_path / "f", BIG_MEMORY.encode(), memory="16MiB", executor=executor)
    assert roomy.state == SUCCEEDED and capped.state == FAILED and "memory limit" in capped.reason
    assert executor.modules.compiled == 3


def test_compiled_modules_stay_within_their_byte_budget():
    from pack_manager.executors.wasm_executor import CompiledModules, new_engine

    modules = CompiledModules(max_bytes=1)  # nothing fits: every load compiles, nothing is kept
    engine = new_engine()
    modules.load(engine, HELLO.encode())
    modules.load(engine, HELLO.encode())
    assert modules.compiled == 2 and modules._bytes == 0


async def test_infinite_loop_hits_the_deadline(tmp_path):
    result, _ = await execute(tmp_path, LOOP_FOREVER.encode(), timeout_ms=300)
    assert result.state == TIMED_OUT
    assert "timed out after 0.3 s" in result.reason


async def test_cancel_interrupts_a_running_module(tmp_path):
    cancel = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _cancel_soon(cancel))
        result, _ = await execute(tmp_path, LOOP_FOREVER.encode(), cancel=cancel)
    assert result.state == CANCELLED


async def _cancel_soon(cancel):
    await trio.sleep(0.2)
    cancel.set()


async def test_module_over_the_memory_cap_fails_cleanly(tmp_path):
    result, _ = await execute(tmp_path, BIG_MEMORY.encode(), memory="16MiB")
    assert result.state == FAILED
    assert "memory limit" in result.reason and "16.0 MiB" in result.reason
    same_module_with_room, _ = await execute(tmp_path / "roomy", BIG_MEMORY.encode(), memory="128MiB")
    assert same_module_with_room.state == SUCCEEDED


async def test_growing_past_the_cap_is_refused(tmp_path):
    result, _ = await execute(tmp_path, GROW_PAST_CAP.encode(), memory="16MiB")
    assert result.state == FAILED
    assert "trap" in result.reason and "unreachable" in result.reason


async def test_trap_and_exit_code_are_failures_with_their_message(tmp_path):
    trapped, _ = await execute(tmp_path / "trap", TRAP.encode())
    assert trapped.state == FAILED and "unreachable" in trapped.reason
    exited, _ = await execute(tmp_path / "exit", EXIT_3.encode())
    assert exited.state == FAILED and exited.exit_code == 3


async def test_garbage_module_is_refused(tmp_path):
    result, _ = await execute(tmp_path, b"\x00asm but not really")
    assert result.state == FAILED
    assert "not a valid WebAssembly module" in result.reason


async def test_module_path_leaving_the_context_is_rejected_before_running(tmp_path):
    blobs = Blobs(tmp_path / "blobs")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("app.wasm")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    spec = JobSpec(
        kind="wasm",
        submitter=bytes(32),
        nonce=bytes(16),
        context=blobs.put(buffer.getvalue()),
        module="app.wasm",
        requirements=WorkloadRequirements(executor="wasm"),
    )

    async def log(line):
        raise AssertionError("nothing may run")

    result = await run_job(
        WasmExecutor(), spec, tmp_path / "work", tmp_path / "result", blobs.path, log, trio.Event()
    )
    assert result.state == FAILED
    assert result.reason.startswith("rejected before running: context:")
    assert "outside" in result.reason
    assert not (tmp_path / "work").exists()


def _context_tar(members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_the_context_is_extracted_writable_and_the_module_found_in_it_also_through_a_link(tmp_path):
    from pack_manager.executors.base import ExecutorLimits
    from pack_manager.executors.staging import stage_work_area

    blobs = Blobs(tmp_path / "blobs")
    module = HELLO.encode()
    plain = blobs.put(_context_tar([_file("bin/app.wat", module), _file("big.dat", b"x" * 100_000)]))
    link = tarfile.TarInfo("app.wat")
    link.type, link.linkname = tarfile.SYMTYPE, "bin/app.wat"
    linked = blobs.put(_context_tar([_file("bin/app.wat", module), (link, None)]))
    for name, context, module_name in (("plain", plain, "bin/app.wat"), ("linked", linked, "app.wat")):
        spec = JobSpec(
            kind="wasm",
            submitter=bytes(32),
            nonce=bytes(16),
            context=context,
            module=module_name,
            requirements=WorkloadRequirements(executor="wasm"),
        )
        work = stage_work_area(
            spec, tmp_path / name / "work", tmp_path / name / "result", blobs.path, ExecutorLimits()
        )
        assert work.context_dir == work.scratch_dir / "context"
        assert work.module_path.read_bytes() == module
        assert (work.context_dir / "bin" / "app.wat").stat().st_mode & 0o777 == 0o666
        assert (work.context_dir / "bin").stat().st_mode & 0o777 == 0o777


def context_spec(context: str, module: str, **changes) -> JobSpec:
    fields = dict(
        kind="wasm",
        submitter=bytes(32),
        nonce=bytes(16),
        context=context,
        module=module,
        requirements=WorkloadRequirements.from_human(memory="64MiB", executor="wasm"),
    )
    return JobSpec(**{**fields, **changes})


async def test_a_wasm_job_runs_its_module_from_a_context(tmp_path):
    blobs = Blobs(tmp_path / "blobs")
    context = blobs.put(_context_tar([_file("app.wat", HELLO.encode())]))
    spec = context_spec(context, "app.wat")
    lines = []

    async def log(line):
        lines.append(line)

    result = await run_job(
        WasmExecutor(), spec, tmp_path / "work", tmp_path / "result", blobs.path, log, trio.Event()
    )
    assert result.state == SUCCEEDED and lines == ["hello from wat", "partial"]
    missing = JobSpec(
        kind="wasm",
        submitter=bytes(32),
        nonce=bytes(16),
        context=context,
        module="nope.wat",
        requirements=WorkloadRequirements(executor="wasm"),
    )
    refused = await run_job(
        WasmExecutor(), missing, tmp_path / "work2", tmp_path / "result2", blobs.path, log, trio.Event()
    )
    assert refused.state == FAILED and "is not a file in the context" in refused.reason


COUNT_TO = """(module (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $again (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const {n}))))))"""


def _store_with_deadline(engine):
    """A store on engine whose guest traps once the engine's epoch moves on from now."""
    import wasmtime

    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1)
    return store


def _count_in(store):
    """Run COUNT_TO (a finite loop with epoch checks) in store: 'interrupted' or 'done'."""
    import wasmtime

    module = wasmtime.Module(store.engine, COUNT_TO.format(n=1000))
    try:
        wasmtime.Instance(store, module, []).exports(store)["_start"](store)
    except wasmtime.Trap as exc:
        assert exc.trap_code == wasmtime.TrapCode.INTERRUPT
        return "interrupted"
    return "done"


def test_a_stop_reaches_only_the_guest_attached_to_the_engine():
    """Engines are shared by the jobs one worker thread runs in turn: a stop that comes after
    a guest detached must not interrupt the next guest on that engine."""
    from pack_manager.executors.wasm_engines import GuestHandle, new_engine

    engine = new_engine()
    next_guest = _store_with_deadline(engine)
    late = GuestHandle()
    assert late.attach(engine)
    late.detach()
    late.stop()  # that job already ended: no epoch bump
    assert _count_in(next_guest) == "done"
    live = GuestHandle()
    running = _store_with_deadline(engine)  # deadline first, then attach, as _run_module does
    assert live.attach(engine)
    live.stop()
    assert _count_in(running) == "interrupted"
    early = GuestHandle()
    early.stop()
    assert not early.attach(engine), "a guest stopped before it attached must not start"


async def test_cancelling_one_job_leaves_the_others_running_on_the_same_executor(tmp_path):
    executor = WasmExecutor()
    cancel = trio.Event()
    results = {}

    async def run(name, wat, event):
        results[name] = await execute(tmp_path / name, wat.encode(), cancel=event, executor=executor)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "looping", LOOP_FOREVER, cancel)
        for index in range(4):  # more jobs than one thread, some after the cancel on reused threads
            nursery.start_soon(run, f"counting{index}", COUNT_TO.format(n=3_000_000), trio.Event())
        await trio.sleep(0.2)
        cancel.set()
        for index in range(4, 8):
            nursery.start_soon(run, f"counting{index}", COUNT_TO.format(n=3_000_000), trio.Event())
    assert results["looping"][0].state == CANCELLED
    for index in range(8):
        assert results[f"counting{index}"][0].state == SUCCEEDED, results[f"counting{index}"][0].reason


async def test_the_context_is_preopened_at_data_context_and_writable(tmp_path, c_modules):
    blobs = Blobs(tmp_path / "blobs")
    module = (c_modules / "from_context.wasm").read_bytes()
    context = blobs.put(_context_tar([_file("app.wasm", module), _file("note.txt", b"in the context\n")]))
    spec = context_spec(context, "app.wasm", command=("note.txt",))
    lines = []

    async def log(line):
        lines.append(line)

    result = await run_job(
        WasmExecutor(), spec, tmp_path / "work", tmp_path / "result", blobs.path, log, trio.Event()
    )
    assert result.state == SUCCEEDED, (result, lines)
    assert lines == ["copied note.txt"]
    assert outputs_of(result) == {"note.txt": b"in the context\n"}
    assert not (tmp_path / "work").exists()
