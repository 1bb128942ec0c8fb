"""One wasmtime engine per worker thread, and the handle that interrupts one job's guest.

An engine, a linker with WASI defined and a loaded module cost ~0.2 ms per job to make again;
a no-op job costs about that much in all. A worker thread runs one guest at a time, so an
engine of its own is bumped (epoch interruption) only for the guest it runs now, provided
the bump cannot land after that guest ended: `GuestHandle` attaches the engine while the
guest runs, and stop() bumps it under the same lock only while it is attached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import blake3
import wasmtime

MODULES_PER_THREAD = 16
COMPILED_CACHE_BYTES = 64 * 1024 * 1024


def new_engine() -> wasmtime.Engine:
    """Every engine has this one configuration, so a module compiled in one loads in any."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    return wasmtime.Engine(config)


class CompiledModules:
    """Compiled modules by blake3 of their bytes, least recently used dropped past a byte
    budget. Used from worker threads, hence the lock. Only bytes this process compiled are
    ever deserialized (wasmtime trusts them)."""

    def __init__(self, max_bytes: int = COMPILED_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._compiled: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.compiled = 0  # how many times a module had to be compiled

    def load(self, engine: wasmtime.Engine, wasm: bytes, digest: bytes | None = None) -> wasmtime.Module:
        """Raises wasmtime.WasmtimeError for bytes that are not a valid module."""
        digest = digest or blake3.blake3(wasm).digest()
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


class ThreadEngine:
    """A worker thread's engine, its WASI linker and the modules loaded into it."""

    def __init__(self) -> None:
        self.engine = new_engine()
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self._modules: OrderedDict[bytes, wasmtime.Module] = OrderedDict()

    def module(self, compiled: CompiledModules, wasm: bytes) -> wasmtime.Module:
        digest = blake3.blake3(wasm).digest()
        module = self._modules.get(digest)
        if module is None:
            module = self._modules[digest] = compiled.load(self.engine, wasm, digest)
            if len(self._modules) > MODULES_PER_THREAD:
                self._modules.popitem(last=False)
        else:
            self._modules.move_to_end(digest)
        return module


class ThreadEngines:
    def __init__(self) -> None:
        self._local = threading.local()

    def current(self) -> ThreadEngine:
        """This thread's engine (made on first use)."""
        held = getattr(self._local, "engine", None)
        if held is None:
            held = self._local.engine = ThreadEngine()
        return held


class GuestHandle:
    """Stops one job's guest from another thread.

    The guest's thread sets the store's epoch deadline first and then attaches: a stop()
    before the attach is seen by attach() (which then refuses), one after it bumps an epoch
    the deadline already counts. detach() when the guest has returned, before the thread
    takes other work, so a late stop() cannot interrupt the next job on that engine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: wasmtime.Engine | None = None
        self.stopped = False

    def attach(self, engine: wasmtime.Engine) -> bool:
        with self._lock:
            if self.stopped:
                return False
            self._engine = engine
            return True

    def detach(self) -> None:
        with self._lock:
            self._engine = None

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            if self._engine is not None:
                self._engine.increment_epoch()
