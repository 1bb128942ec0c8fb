"""The job loop: thin I/O around pack_manager.scheduling.

On every document change and every tick, for each job this node has not finished, it builds
the views (JobView, NodeViews) from the document and membership, asks scheduling.decide what
*this* node should do, and does only that: writes its own run record, starts or stops its
executor task, holds a reservation while the job runs. Nodes that are not responsible write
nothing.

Records written here (bodies; envelopes are signed by this node):
    jobs[job_hex]               {"spec": JobSpec.pack(), "submitted_ms": int}
    runs[f"{job_hex}:{me}"]     RunReport.to_wire()
    cancels[job_hex]            {"reason": str, "requested_ms": int}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import blake3
import msgpack
import trio

from crdt_state.records import RecordError
from crdt_state.signing import seal_record
from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity, Reservation, apply_reservations
from metrics_agent.wire import WireError
from pack_manager import scheduling
from pack_manager.executors import run_job
from pack_manager.executors.base import ExecutionResult, Executor, ExecutorLimits
from pack_manager.jobspec import JobSpec, JobSpecError, is_digest
from pack_manager.jobstate import (
    CANCELLED,
    CLAIMED,
    DECLINED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    YIELDED,
    OutputRef,
    RunReport,
    TransitionError,
    advance,
)
from pack_manager.placement import DEFAULT_POLICY

from .blobfetch import BLOB_PREFIX, FETCH_CHUNK, BlobRequestError, FetchError, fetch_blob, serve_blob_request
from .blobstore import BlobStore
from .node import Node
from .transport import TransportError

RESTARTED = "formd restarted during the run"


@dataclass
class Job:
    job_hex: str
    spec: JobSpec
    submitted_ms: int
    runs: dict[bytes, RunReport] = field(default_factory=dict)
    cancelled: bool = False

    def view(self) -> scheduling.JobView:
        return scheduling.JobView(bytes.fromhex(self.job_hex), self.spec, self.runs, self.cancelled)


@dataclass
class Running:
    cancel: trio.Event
    stop_state: str = CANCELLED
    stop_reason: str = ""


def node_now_ms(node: Node) -> int:
    """Wall-clock milliseconds as the node sees them (simulated time in the simulation)."""
    return int(node.wall_clock() * 1000)


class JobLoop:
    def __init__(
        self,
        node: Node,
        blobs: BlobStore,
        work_dir: Path,
        executors: Mapping[str, Executor] | Callable[[], Mapping[str, Executor]],
        *,
        policy: str = DEFAULT_POLICY,
        max_attempts: int = 3,
        limits: ExecutorLimits | None = None,
    ) -> None:
        self.node = node
        self.blobs = blobs
        self.work_dir = work_dir
        self._executors = executors
        self.policy = policy
        self.max_attempts = max_attempts
        self.limits = limits or ExecutorLimits()
        self.reservations: dict[str, Reservation] = {}
        self.running: dict[str, Running] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._bad_jobs: set[str] = set()
        self.live_logs: dict[str, Path] = {}
        # Decoded records by envelope: every pass reads the whole document, decoding once is enough.
        self._job_cache: dict[str, tuple[bytes, JobSpec, int]] = {}
        self._run_cache: dict[str, tuple[bytes, RunReport]] = {}
        self._fetching: dict[str, trio.Lock] = {}  # one fetch per digest: they share its partial file  # job hex -> the log file of a run in progress here

    @property
    def me(self) -> bytes:
        return self.node.identity.node_id

    def executors(self) -> Mapping[str, Executor]:
        return self._executors() if callable(self._executors) else self._executors

    # ---- reading the document ---------------------------------------------------------------

    def jobs(self) -> dict[str, Job]:
        jobs: dict[str, Job] = {}
        for key, entry in self.node.document.items("jobs").items():
            cached = self._job_cache.get(key)
            if cached is not None and cached[0] == entry.envelope:
                jobs[key] = Job(key, cached[1], cached[2])
                continue
            job = self._decode_job(key, entry.body)
            if job is not None:
                self._job_cache[key] = (entry.envelope, job.spec, job.submitted_ms)
                jobs[key] = job
        for key, entry in self.node.document.items("runs").items():
            job_hex, _, node_hex = key.partition(":")
            job = jobs.get(job_hex)
            if job is None:
                continue
            cached_run = self._run_cache.get(key)
            if cached_run is not None and cached_run[0] == entry.envelope:
                job.runs[bytes.fromhex(node_hex)] = cached_run[1]
                continue
            try:
                report = RunReport.from_wire(entry.body)
            except (WireError, ValueError):
                continue
            self._run_cache[key] = (entry.envelope, report)
            job.runs[bytes.fromhex(node_hex)] = report
        for key in self.node.document.items("cancels"):
            if key in jobs:
                jobs[key].cancelled = True
        return jobs

    def _decode_job(self, key: str, body: dict) -> Job | None:
        try:
            packed = body.get("spec")
            if not isinstance(packed, bytes):
                raise JobSpecError("job record: no spec")
            spec = JobSpec.unpack(packed)
            if spec.job_id().hex() != key:
                raise JobSpecError("job record: the key is not the spec's id")
            submitted = body.get("submitted_ms", 0)
            return Job(key, spec, submitted if isinstance(submitted, int) else 0)
        except JobSpecError as exc:
            if key not in self._bad_jobs:
                self._bad_jobs.add(key)
                self.node.log.warning("job record ignored", job=key[:12], reason=str(exc))
            return None

    def node_views(self) -> dict[bytes, scheduling.NodeView]:
        views = {}
        now = trio.current_time()
        for node_id, record in self.node.document.node_records().items():
            try:
                if node_id == self.me:
                    caps = self.node.capabilities
                else:
                    caps = NodeCapabilities.from_wire(record.capabilities)
                capacity = NodeCapacity.from_wire(record.capacity) if record.capacity else None
            except (WireError, ValueError, TypeError):
                continue
            views[node_id] = scheduling.NodeView(caps, capacity, self.node.peer_status(node_id, now), record.updated_ms)
        return views

    def own_capacity(self) -> NodeCapacity | None:
        if self.node.capacity is None:
            return None
        return apply_reservations(self.node.capabilities, self.node.capacity, self.reservations.values())

    # ---- writing our run records ------------------------------------------------------------

    def write_run(self, job_hex: str, current: RunReport | None, state: str, *, durable: bool = False, **changes: Any) -> RunReport | None:
        changes.setdefault("updated_ms", node_now_ms(self.node))
        try:
            report = advance(current, state, **changes)
            envelope = seal_record(self.node.identity.private_key, "run", report.to_wire())
            self.node.document.put_local("runs", f"{job_hex}:{self.node.identity.node_hex}", envelope)
        except (TransitionError, RecordError) as exc:
            self.node.log.error("run record not written", job=job_hex[:12], state=state, reason=str(exc))
            return None
        self.node.commit_local(durable=durable)
        self.node.log.info("job " + state, job=job_hex[:12], attempt=report.attempt, reason=report.reason[:200])
        return report

    def own_run(self, job_hex: str) -> RunReport | None:
        entry = self.node.document.get("runs", f"{job_hex}:{self.node.identity.node_hex}")
        if entry is None:
            return None
        try:
            return RunReport.from_wire(entry.body)
        except WireError:
            return None

    def yield_leftovers(self) -> None:
        """Our own active records from a previous process: that run is gone."""
        for key, entry in self.node.document.items("runs").items():
            job_hex, _, node_hex = key.partition(":")
            if node_hex != self.node.identity.node_hex:
                continue
            try:
                report = RunReport.from_wire(entry.body)
            except WireError:
                continue
            if report.active:
                self.write_run(job_hex, report, YIELDED, durable=True, reason=RESTARTED)

    # ---- the loop ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.yield_leftovers()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                with trio.move_on_after(self.node.settings.tick_interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                try:
                    self.step()
                except Exception as exc:  # a bug in one pass must not stop the loop
                    self.node.log.error("job loop pass failed", error=f"{type(exc).__name__}: {exc}")

    def step(self) -> None:
        jobs = self.jobs()
        nodes = self.node_views()
        for job_hex, job in jobs.items():
            own = job.runs.get(self.me)
            if own is not None and own.final:
                continue
            if (own is None or not own.active) and sum(r.final for r in job.runs.values()) >= job.spec.replicas:
                continue  # finished by others: decide would say nothing (no free replica slot)
            action = scheduling.decide(
                job.view(), nodes, self.me, self.own_capacity(), policy=self.policy, max_attempts=self.max_attempts
            )
            if action is not None:
                self.act(job, own, action)

    def act(self, job: Job, own: RunReport | None, action: scheduling.Action) -> None:
        job_hex = job.job_hex
        if isinstance(action, scheduling.Claim):
            if job_hex in self.running:
                return
            report = self.write_run(job_hex, own, CLAIMED, attempt=action.attempt, reason=action.reason,
                                    started_ms=0, finished_ms=0, exit_code=None, outputs=(), result_digest=None, log_digest=None)
            if report is None:
                return
            req = job.spec.requirements
            self.reservations[job_hex] = Reservation(req.cpu_millicores, req.memory_bytes, req.disk_bytes)
            running = Running(trio.Event())
            self.running[job_hex] = running
            assert self._nursery is not None
            self._nursery.start_soon(self._execute, job, report, running)
        elif isinstance(action, scheduling.Decline):
            attempt = own.attempt if own is not None else 1
            self.write_run(job_hex, own, DECLINED, attempt=attempt, reason="; ".join(action.reasons))
        elif isinstance(action, (scheduling.Yield, scheduling.Stop)):
            state = YIELDED if isinstance(action, scheduling.Yield) else CANCELLED
            running = self.running.get(job_hex)
            if running is not None:
                if not running.cancel.is_set():
                    running.stop_state, running.stop_reason = state, action.reason
                    running.cancel.set()
            elif own is not None and own.active:
                self.write_run(job_hex, own, state, reason=action.reason, finished_ms=node_now_ms(self.node))
        elif isinstance(action, scheduling.GiveUp):
            self.write_run(job_hex, own, FAILED, attempt=max(1, action.attempt), reason=action.reason, finished_ms=node_now_ms(self.node))

    # ---- one run ----------------------------------------------------------------------------

    async def _execute(self, job: Job, report: RunReport, running: Running) -> None:
        job_hex = job.job_hex
        try:
            result, log_digest = await self._run(job, report, running)
            outputs = []
            for item in result.outputs:
                digest = await trio.to_thread.run_sync(self.blobs.put_file, item.path)
                outputs.append(OutputRef(item.name, digest, item.size))
            state, reason = result.state, result.reason
            if state == CANCELLED and running.cancel.is_set():
                state, reason = running.stop_state, running.stop_reason
            current = self.own_run(job_hex) or report
            self.write_run(
                job_hex, current, state, durable=True, reason=reason, exit_code=result.exit_code,
                finished_ms=node_now_ms(self.node), outputs=tuple(outputs), result_digest=_result_digest(outputs) if state == SUCCEEDED else None,
                log_digest=log_digest,
            )
        except Exception as exc:  # anything unexpected still ends the run with a record
            self.node.log.error("job run failed", job=job_hex[:12], error=f"{type(exc).__name__}: {exc}")
            current = self.own_run(job_hex) or report
            if current.active:
                self.write_run(job_hex, current, FAILED, reason=f"formd error: {type(exc).__name__}: {exc}", finished_ms=node_now_ms(self.node))
        finally:
            self.reservations.pop(job_hex, None)
            self.running.pop(job_hex, None)
            self.wake()

    async def _run(self, job: Job, report: RunReport, running: Running) -> tuple[ExecutionResult, str | None]:
        spec = job.spec
        executor = self.executors().get(spec.requirements.executor)
        if executor is None:
            return ExecutionResult(FAILED, f"this node has no {spec.requirements.executor} executor"), None
        try:
            await self.fetch_inputs(spec, job)
        except FetchError as exc:
            return ExecutionResult(FAILED, f"could not fetch the job's input: {exc}"), None
        if running.cancel.is_set():
            return ExecutionResult(CANCELLED, running.stop_reason), None
        current = self.own_run(job.job_hex) or report
        if current.state != CLAIMED:
            return ExecutionResult(CANCELLED, "claim no longer held"), None
        self.write_run(job.job_hex, current, RUNNING, reason=f"running on {self.node.identity.node_hex[:12]}", started_ms=node_now_ms(self.node))
        run_dir = self.work_dir / f"{job.job_hex}-{report.attempt}-{os.urandom(4).hex()}"
        log_path = run_dir.with_suffix(".log")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "w", encoding="utf-8")

        async def log(line: str) -> None:
            log_file.write(line if line.endswith("\n") else line + "\n")
            log_file.flush()

        self.live_logs[job.job_hex] = log_path
        try:
            result = await run_job(executor, spec, run_dir / "work", run_dir / "result", self._blob_path, log, running.cancel, self.limits)
        finally:
            log_file.close()
            self.live_logs.pop(job.job_hex, None)
        log_digest = await trio.to_thread.run_sync(self.blobs.put_file, log_path)
        log_path.unlink(missing_ok=True)
        return result, log_digest

    def read_live_log(self, job_hex: str, offset: int, length: int = FETCH_CHUNK) -> bytes | None:
        """Part of the log of a run in progress on this node, or None when none runs here."""
        path = self.live_logs.get(job_hex)
        if path is None:
            return None
        try:
            with open(path, "rb") as src:
                src.seek(offset)
                return src.read(length)
        except FileNotFoundError:
            return None

    def serve_peer_request(self, payload: bytes) -> bytes | str:
        """Side requests from peers (0xc1 payloads): blob chunks, and live log chunks
        {"op": "log", "job": hex, "offset": int} -> 0xc1 + msgpack {"data": bytes}."""
        try:
            request = msgpack.unpackb(payload[1:], raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise BlobRequestError("bad side request: not msgpack") from None
        if isinstance(request, dict) and request.get("op") == "log":
            job_hex, offset = request.get("job"), request.get("offset")
            if not isinstance(job_hex, str) or not isinstance(offset, int) or offset < 0:
                raise BlobRequestError("log request: job and offset required")
            data = self.read_live_log(job_hex, offset)
            if data is None:
                return f"job {job_hex[:12]} is not running here"
            return BLOB_PREFIX + msgpack.packb({"data": data}, use_bin_type=True)
        return serve_blob_request(self.blobs, payload)

    async def fetch_live_log(self, node_id: bytes, job_hex: str, offset: int) -> bytes | None:
        if node_id == self.me:
            return self.read_live_log(job_hex, offset)
        addresses = self.addresses([node_id])
        if not addresses:
            return None
        request = BLOB_PREFIX + msgpack.packb({"op": "log", "job": job_hex, "offset": offset}, use_bin_type=True)
        try:
            reply = await self.node.transport.request(addresses[0], request, self.node.settings.request_timeout)
            value = msgpack.unpackb(reply[1:], raw=False) if reply[:1] == BLOB_PREFIX else None
        except (TransportError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return None
        return value.get("data") if isinstance(value, dict) and isinstance(value.get("data"), bytes) else None

    def _blob_path(self, digest: str) -> Path | None:
        return self.blobs.path(digest) if self.blobs.has(digest) else None

    def spec_blobs(self, spec: JobSpec) -> list[str]:
        wanted = [d for d in [spec.context, spec.module] if d is not None and is_digest(d)]
        return wanted + [item.digest for item in spec.inputs]

    async def fetch_inputs(self, spec: JobSpec, job: Job | None = None) -> None:
        """From the submitter first, then from nodes that ran the job before (they fetched it)."""
        ran = [n for n, r in (job.runs.items() if job else ()) if r.state not in (DECLINED, CLAIMED) and n != spec.submitter]
        holders = self.addresses([spec.submitter, *ran])
        for digest in self.spec_blobs(spec):
            await self.fetch(digest, holders)

    async def fetch(self, digest: str, holders: list[str]) -> None:
        """Make a blob local; concurrent callers for one digest wait for the one fetch."""
        lock = self._fetching.setdefault(digest, trio.Lock())
        try:
            async with lock:
                await fetch_blob(self.blobs, self.node.transport, digest, holders, self.node.settings.request_timeout * 5)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._fetching.pop(digest, None)

    def addresses(self, node_ids: list[bytes]) -> list[str]:
        records = self.node.document.node_records()
        return [records[n].address for n in node_ids if n in records and n != self.me]


def _result_digest(outputs: list[OutputRef]) -> str:
    """What replicas compare: blake3 over the sorted (name, digest) pairs."""
    text = "\n".join(f"{o.name} {o.digest}" for o in sorted(outputs, key=lambda o: o.name))
    return blake3.blake3(text.encode()).hexdigest()
