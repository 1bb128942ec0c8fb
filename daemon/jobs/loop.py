"""The job loop: thin I/O around pack_manager.scheduling.

On every document change and every tick it asks scheduling.decide what *this* node should do
about the jobs that may need it, and does only that: writes its own run record, starts or
stops its executor task, holds a reservation while the job runs. Nodes that are not
responsible write nothing. A pass re-decides only what may have changed (daemon/jobs/records.py
says which jobs' records changed): those jobs, every open job when a node record or a node's
liveness changed, and the jobs this node declined when its own capacity grew; the decision is
a pure function of those inputs, so the rest would come out the same.

Records written here (bodies; envelopes are signed by this node; layout in job_records.py):
    jobs[job_hex] (by jobs_api on submit), runs[f"{job_hex}:{me}"], cancels[job_hex] (jobs_api)
A first claim of a job is written only once its run has gone on for CLAIM_QUIET_S; a shorter
run writes only its result (see JobLoop.unpublished).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import blake3
import trio

from crdt_state.records import NodeRecord, RecordError
from crdt_state.signing import seal_record
from daemon.cluster.node import Node
from daemon.jobs.blobfetch import BlobFetcher, FetchError
from daemon.jobs.blobstore import BlobStore
from daemon.jobs.dataset_catalog import DatasetCatalog
from daemon.jobs.dataset_gate import Refused, admit, cap_refusal
from daemon.jobs.dataset_store import DatasetStore
from daemon.jobs.group_commit import GroupCommit
from daemon.jobs.images import NodeImages
from daemon.jobs.node_views import NodeViews
from daemon.jobs.peer_requests import LiveLogs, request_live_log
from daemon.jobs.placement_orders import OrderNodes, PlacementOrders
from daemon.jobs.records import Job, JobRecords, spec_blobs
from daemon.jobs.retirement import Retirement
from daemon.jobs.wakeup import Wakeup
from daemon.log import EventLog
from metrics_agent.capacity import NodeCapacity, Reservation, apply_reservations
from metrics_agent.wire import WireError
from pack_manager import scheduling
from pack_manager.containerfile import base_images
from pack_manager.context_archive import text_member
from pack_manager.executors import run_job
from pack_manager.executors.base import ExecutionResult, Executor, ExecutorLimits, JobGpu
from pack_manager.executors.staging import remove_tree
from pack_manager.fit import capability_slots, check_capacity, free_matching_gpus
from pack_manager.jobspec import JobSpec
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
from pack_manager.requirements import WorkloadRequirements
from pack_manager.retention import RetentionRule

RESTARTED = "formd restarted during the run"
# A first claim of a job is written only when its run still goes on this long after the claim
# (see JobLoop.unpublished).
CLAIM_QUIET_S = 1.0


@dataclass
class Running:
    cancel: trio.Event
    stop_state: str = CANCELLED
    stop_reason: str = ""
    gpus: tuple[JobGpu, ...] = ()  # reserved for this run


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
        sync_log: Callable[[], None] | None = None,
        retention_s: float = 86_400.0,
        claim_quiet_s: float = CLAIM_QUIET_S,
        wakeup: Wakeup | None = None,
        live_logs: LiveLogs | None = None,
        fetcher: BlobFetcher | None = None,
        pending_uploads: dict[str, float] | None = None,
        images: NodeImages | None = None,
        reservations: dict[str, Reservation] | None = None,
        order_nodes: OrderNodes = scheduling.order_nodes,
        datasets: DatasetStore | None = None,
    ) -> None:
        self.node = node
        self.datasets = datasets  # the datasets this node holds (None: it keeps none)
        self.dataset_catalog = DatasetCatalog(node.document, self._bad_dataset)
        self.blobs = blobs
        self.work_dir = work_dir
        self._executors = executors
        self.policy = policy
        self.max_attempts = max_attempts
        self.limits = limits or ExecutorLimits()
        self.retention_s = retention_s  # finished jobs are retired from the document after this
        # Claims not written yet: job hex -> (trio time to write it, our claimed or running
        # report). Written at once, a claim makes a no-op job cost two records, running and
        # then its result (three when its inputs must be fetched first: claimed, running,
        # result), each signed here and verified, decoded and decided on by every peer; a run
        # that ends within claim_quiet_s writes its result alone, with the claim's attempt and
        # started_ms.
        # Only a first claim waits (no earlier record of ours for the job): the document then
        # shows what it shows before any node acted, which peers already handle (the claimant
        # ranks first; they wait unless it dies). This node's own decisions see the claim.
        self.claim_quiet_s = claim_quiet_s
        self.unpublished: dict[str, tuple[float, RunReport]] = {}
        # Shared with the node's capacity sampler, which counts what our runs hold.
        self.reservations: dict[str, Reservation] = {} if reservations is None else reservations
        self.running: dict[str, Running] = {}
        self.stopping = False
        self.wakeup = wakeup or Wakeup()
        self._nursery: trio.Nursery | None = None
        self.live_logs = live_logs or LiveLogs()  # the runs in progress here, read by peers too
        self.fetcher = fetcher or BlobFetcher(blobs, node.transport, node.settings.request_timeout * 5)
        self.records = JobRecords(node.document, self._bad_job, self.dataset_catalog)
        # digest -> when blob.put stored it; no submit named it yet (shared with the images)
        self.pending_uploads: dict[str, float] = {} if pending_uploads is None else pending_uploads
        self.retirement = Retirement(
            self.records,
            blobs,
            self.me,
            RetentionRule(int(retention_s * 1000)),
            now_ms=lambda: node_now_ms(node),
            in_use=lambda digest: self.fetcher.fetching(digest) or digest in self.pending_uploads,
            policy=policy,
            pending_uploads=self.pending_uploads,
            order_nodes=order_nodes,
        )
        # fsync of the document log, shared by concurrent writers; without one, each durable
        # write fsyncs through the node's store on its own.
        self._group_commit = GroupCommit(sync_log) if sync_log is not None else None
        # What the last pass decided on, so the next one re-decides only what may now differ.
        self._open: set[str] = set()  # jobs that may still need an action from this node
        self.views = NodeViews(node, trio.current_time)  # kept by changes, not rebuilt per pass
        self._last_full_pass = float("-inf")
        self._views_changed = False  # figures changed since the last full pass
        self._capacity_freed = False
        self._own_capacity: NodeCapacity | None = None
        self.orders = PlacementOrders(policy, order_nodes)
        self._in_pass = False  # a pass writes its records, then stores and pushes them as one update
        # This node's images (published, fetched from holders, pulled, cached); None runs jobs
        # with whatever images the store has.
        self.images = images

    def configure_document(self) -> None:
        """Give the document the job layer's rules (the process calls this once, after building
        the loop): which remote deletes to take, and one merged update per local batch."""
        self.node.document.may_delete = self.retirement.may_delete
        self.node.document.merge_local_updates = True  # a pass's claims, a batch of submits: one update each

    @property
    def me(self) -> bytes:
        return self.node.identity.node_id

    def executors(self) -> Mapping[str, Executor]:
        return self._executors() if callable(self._executors) else self._executors

    # ---- reading the document ---------------------------------------------------------------

    def jobs(self) -> dict[str, Job]:
        return self.records.jobs()

    def _bad_job(self, key: str, reason: str) -> None:
        self.node.log.warning("job record ignored", job=key[:12], reason=reason)

    def _bad_dataset(self, key: str, reason: str) -> None:
        self.node.log.warning("dataset record ignored", dataset=key[:80], reason=reason)

    def never_served(self, digest: object) -> bool:
        """A dataset's digest or one of its files' here: it never leaves this node."""
        if not isinstance(digest, str):
            return False
        local = self.datasets.protected() if self.datasets is not None else frozenset()
        return digest in local or digest in self.dataset_catalog.digests()

    def node_views(self) -> dict[bytes, scheduling.NodeView]:
        return self.views.current()

    def own_capacity(self) -> NodeCapacity | None:
        if self.node.capacity is None:
            return None
        return apply_reservations(self.node.capabilities, self.node.capacity, self.reservations.values())

    # ---- the surface the control API uses ---------------------------------------------------

    @property
    def log(self) -> EventLog:
        return self.node.log

    def now_ms(self) -> int:
        return node_now_ms(self.node)

    def sign(self, kind: str, body: dict[str, Any]) -> bytes:
        """A record of `kind` signed by this node (RecordError when the body is refused)."""
        return seal_record(self.node.identity.private_key, kind, body)

    def write_job(self, job_hex: str, spec: JobSpec, envelope: bytes) -> None:
        """Put a job record this node sealed; committed by commit_durably (RecordError if refused)."""
        self.node.document.put_local("jobs", job_hex, envelope)
        self.records.wrote(job_hex, spec)

    def write_cancel(self, job_hex: str, envelope: bytes) -> None:
        """Put a cancel record this node sealed; committed by commit_durably (RecordError if refused)."""
        self.node.document.put_local("cancels", job_hex, envelope)

    def write_dataset(self, key: str, envelope: bytes) -> None:
        """Put a dataset record this node sealed; committed by commit_durably (RecordError if refused)."""
        self.node.document.put_local("datasets", key, envelope)

    def job_keys(self) -> dict[str, list[str]]:
        """The keys of the job-related maps of this node's document."""
        return {name: sorted(self.node.document.items(name)) for name in ("jobs", "runs", "cancels")}

    def node_records(self) -> dict[bytes, NodeRecord]:
        return self.node.document.node_records()

    def holders(self, digest: str) -> set[bytes]:
        """Who the job records say holds the blob (empty when no record names it)."""
        return self.records.holders(digest)

    def holdings(self, spec: JobSpec) -> dict[bytes, int]:
        return self.records.holdings(spec)

    def orders_for(self, nodes: dict[bytes, scheduling.NodeView]) -> PlacementOrders:
        """Placement orders over `nodes`, kept across calls (see daemon/jobs/placement_orders.py)."""
        return self.orders.for_nodes(nodes)

    # ---- writing our run records ------------------------------------------------------------

    def write_run(
        self, job_hex: str, current: RunReport | None, state: str, *, durable: bool = False, **changes: Any
    ) -> RunReport | None:
        report = self._next_report(job_hex, current, state, **changes)
        return self._put_run(job_hex, report, durable=durable) if report is not None else None

    def _next_report(
        self, job_hex: str, current: RunReport | None, state: str, **changes: Any
    ) -> RunReport | None:
        changes.setdefault("updated_ms", node_now_ms(self.node))
        try:
            return advance(current, state, **changes)
        except TransitionError as exc:
            self.node.log.error("run record not written", job=job_hex[:12], state=state, reason=str(exc))
            return None

    def _put_run(self, job_hex: str, report: RunReport, *, durable: bool = False) -> RunReport | None:
        try:
            envelope = seal_record(self.node.identity.private_key, "run", report.to_wire())
            self.node.document.put_local("runs", f"{job_hex}:{self.node.identity.node_hex}", envelope)
        except RecordError as exc:
            self.node.log.error(
                "run record not written", job=job_hex[:12], state=report.state, reason=str(exc)
            )
            return None
        if durable or not self._in_pass:
            self.node.commit_local(durable=durable)
        self.node.log.info(
            "job " + report.state, job=job_hex[:12], attempt=report.attempt, reason=report.reason[:200]
        )
        return report

    def _publish_due_claims(self) -> None:
        now = trio.current_time()
        for job_hex, (due, report) in list(self.unpublished.items()):
            if due <= now:
                del self.unpublished[job_hex]
                self._put_run(job_hex, report)

    def _own_current(self, job_hex: str, fallback: RunReport) -> RunReport:
        """Our run of the job as it stands: the claim not written yet, else our record."""
        held = self.unpublished.get(job_hex)
        return held[1] if held is not None else (self.own_run(job_hex) or fallback)

    def _job(self, job_hex: str) -> Job | None:
        """The job as this node decides on it: with our claim, written or not."""
        job = self.records.job(job_hex)
        held = self.unpublished.get(job_hex)
        if job is not None and held is not None:
            job.runs[self.me] = held[1]  # job.runs is the job's own copy
        return job

    async def commit_durably(self) -> None:
        """Store and push our pending writes; return once they are on disk."""
        if self._group_commit is None:
            self.node.commit_local(durable=True)
            return
        self.node.commit_local(durable=False)
        await self._group_commit.durable()

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

    async def stop_all(self, reason: str, timeout: float) -> None:
        """Stop every run here, each recorded as yielded so its job moves on, and return once
        they have ended (their executors remove what they started) or after timeout."""
        self.stopping = True  # no new claims: this node is on its way out
        for running in self.running.values():
            if not running.cancel.is_set():
                running.stop_state, running.stop_reason = YIELDED, reason
                running.cancel.set()
        with trio.move_on_after(timeout):
            while self.running:
                await trio.sleep(0.05)

    # ---- the loop ---------------------------------------------------------------------------

    def wake(self) -> None:
        self.wakeup.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.yield_leftovers()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.images is not None:
                await nursery.start(self.images.run)
            task_status.started()
            while True:
                # No wake-up of its own for a claim's due time: the next pass writes it (passes
                # come at least every tick), and a pass costs more than the claim.
                await self.wakeup.wait(self.node.settings.tick_interval)
                try:
                    self.step()
                except Exception as exc:  # a bug in one pass must not stop the loop
                    self.node.log.error("job loop pass failed", error=f"{type(exc).__name__}: {exc}")

    def step(self) -> None:
        """Decide what changed: jobs whose records changed; every open job when a node's record
        or liveness changed; jobs we declined when our own capacity grew. What the pass wrote
        is committed once at its end (no await in between: nothing else can drain it first)."""
        self._in_pass = True
        try:
            self._publish_due_claims()
            self._decide_changed()
        finally:
            self._in_pass = False
            self.node.commit_local()

    def _decide_changed(self) -> None:
        changed = self.records.take_changed()
        nodes = self.node_views()
        self.retirement.note(changed)
        for job_hex in changed:
            job = self._job(job_hex)
            if job is not None and self._needs_us(job):
                self._open.add(job_hex)
            else:
                self._open.discard(job_hex)
        nodes_changed = self._nodes_changed(nodes)
        if self.dataset_catalog.take_changed() or nodes_changed:
            todo = set(self._open)
        else:
            todo = changed & self._open
        # Retry delays and queue timeouts come due with time alone: decide those jobs every pass.
        todo |= {
            h for h in self._open if h in self.records.specs and _waits_on_time(self.records.specs[h][0])
        }
        if self._capacity_freed:
            self._capacity_freed = False
            todo |= {
                h
                for h in self._open
                if (run := self.records.runs.get(h, {}).get(self.me)) is not None and run.state == DECLINED
            }
        self._own_capacity = self.own_capacity()
        orders = self.orders.for_nodes(nodes)
        for job_hex in sorted(todo, key=lambda h: (self.records.specs[h][1], h)):  # oldest first
            job = self._job(job_hex)
            if job is None:
                continue
            own = job.runs.get(self.me)
            if own is not None and own.active and job_hex not in self.running:
                # Our claim from an earlier process, come back through gossip (our own store
                # lost it): nothing runs it here. Say so, so the job moves on.
                self.write_run(job_hex, own, YIELDED, reason=RESTARTED)
                continue
            action = scheduling.decide(
                job.view(),
                nodes,
                self.me,
                self._own_capacity,
                policy=self.policy,
                max_attempts=self.max_attempts,
                order=orders.order(job),
                now_ms=node_now_ms(self.node),
            )
            if action is not None:
                self.act(job, job.runs.get(self.me), action)
        self.retire(nodes)

    def retire(self, nodes: dict[bytes, scheduling.NodeView]) -> None:
        """Delete the records of jobs due for retirement (if ours to delete) and the blobs
        that only retired records named."""
        entries = self.retirement.due_deletes(nodes, set(self.running))
        if entries:
            jobs = {key.partition(":")[0] for _, key in entries}
            removed = self.node.document.delete_local(entries)
            self.node.commit_local()
            self.retirement.retired += len(jobs)
            self.orders.forget(jobs)
            self.node.log.info("jobs retired", jobs=len(jobs), records=removed)
            self.records.refresh()
        collected = self.retirement.collect() + self.retirement.sweep(min(self.retention_s, 3600.0))
        if collected:
            self.node.log.info("blobs collected", count=len(collected))

    def _nodes_changed(self, nodes: dict[bytes, scheduling.NodeView]) -> bool:
        """Whether every open job must be decided again. At once when a node came, went, or
        changed liveness or capabilities (failover, unschedulable -> schedulable); for capacity
        figures, which every node rewrites each tick, at most once per tick: they only decide
        whether a better-ranked node is skipped before it declines."""
        now = trio.current_time()
        shape_changed, changed = self.views.take_changes()
        self._views_changed = self._views_changed or changed
        if not shape_changed and (
            not self._views_changed or now - self._last_full_pass < self.node.settings.tick_interval
        ):
            return False
        self._views_changed, self._last_full_pass = False, now
        return True

    def _needs_us(self, job: Job) -> bool:
        """False when nothing can ever be ours to do for the job (until its records change)."""
        own = job.runs.get(self.me)
        if own is not None and own.final:
            return False
        if own is not None and own.active:
            return True
        if job.cancelled:
            return False
        return not scheduling.settled(job.spec, job.runs)  # else finished by others

    def _free_gpus(self, req: WorkloadRequirements) -> tuple[JobGpu, ...]:
        """The GPUs a claim of a job with these requirements gets: free, matching, offered."""
        capacity = self._own_capacity or self.own_capacity()
        if not req.gpu_count or capacity is None:
            return ()
        caps = self.node.capabilities
        by_index = {g.index: g for g in caps.gpus}
        free = free_matching_gpus(caps, capacity, req)[: req.gpu_count]
        return tuple(JobGpu(i, by_index[i].uuid, by_index[i].cdi_device) for i in free)

    def act(self, job: Job, own: RunReport | None, action: scheduling.Action) -> None:
        job_hex = job.job_hex
        if isinstance(action, scheduling.Claim):
            if job_hex in self.running or self.stopping:
                return
            if job.spec.requirements.executor not in self.executors():
                # Offered by our record but not started yet (Podman comes up after a restart):
                # claim on a later pass rather than fail the job here.
                return
            gpus = self._free_gpus(job.spec.requirements)
            if len(gpus) < job.spec.requirements.gpu_count:
                return  # taken since the decision; the next pass declines
            # With every input here there is nothing to fetch: the claim starts as running.
            now_running = all(self.blobs.has(d) for d in spec_blobs(job.spec))
            report = self._next_report(
                job_hex,
                own,
                RUNNING if now_running else CLAIMED,
                attempt=action.attempt,
                reason=action.reason,
                started_ms=node_now_ms(self.node) if now_running else 0,
                finished_ms=0,
                exit_code=None,
                outputs=(),
                result_digest=None,
                log_digest=None,
            )
            if report is not None and own is None and self.claim_quiet_s > 0:
                self.unpublished[job_hex] = (trio.current_time() + self.claim_quiet_s, report)
            elif report is not None:
                report = self._put_run(job_hex, report)
            if report is None:
                return
            req = job.spec.requirements
            slots = (
                capability_slots(self.node.capabilities, self._own_capacity, req)
                if self._own_capacity
                else ()
            )
            self.reservations[job_hex] = Reservation(
                req.cpu_millicores,
                req.memory_bytes,
                req.disk_bytes,
                tuple(g.index for g in gpus),
                capabilities=slots,
            )
            self._own_capacity = self.own_capacity()
            if job_hex in self.unpublished and check_capacity(
                self.node.capabilities, self._own_capacity, req
            ):
                # Our next record shows no room for this job (its slot, GPU or cores are now
                # ours): peers would see us as unable and the next node would claim too. A claim
                # peers cannot read as "still waiting for the first node" is written at once.
                _, held = self.unpublished.pop(job_hex)
                self._put_run(job_hex, held)
            running = Running(trio.Event(), gpus=gpus)
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
            self.write_run(
                job_hex,
                own,
                FAILED,
                attempt=max(1, action.attempt),
                reason=action.reason,
                finished_ms=node_now_ms(self.node),
            )

    # ---- one run ----------------------------------------------------------------------------

    async def _execute(self, job: Job, report: RunReport, running: Running) -> None:
        job_hex = job.job_hex
        try:
            result, log_digest, outputs = await self._run(job, report, running)
            state, reason = result.state, result.reason
            if state == CANCELLED and running.cancel.is_set():
                state, reason = running.stop_state, running.stop_reason
            current = self._own_current(job_hex, report)
            self.unpublished.pop(job_hex, None)  # the result carries the claim's attempt and start
            self.write_run(
                job_hex,
                current,
                state,
                reason=reason,
                exit_code=result.exit_code,
                finished_ms=node_now_ms(self.node),
                outputs=tuple(outputs),
                result_digest=_result_digest(outputs) if state == SUCCEEDED else None,
                log_digest=log_digest,
                unable=state == DECLINED,  # a missing image or input ends a claim in a decline
            )
            await self.commit_durably()
        except Exception as exc:  # anything unexpected still ends the run with a record
            self.node.log.error("job run failed", job=job_hex[:12], error=f"{type(exc).__name__}: {exc}")
            current = self._own_current(job_hex, report)
            self.unpublished.pop(job_hex, None)
            if current.active:
                self.write_run(
                    job_hex,
                    current,
                    FAILED,
                    reason=f"formd error: {type(exc).__name__}: {exc}",
                    finished_ms=node_now_ms(self.node),
                )
        finally:
            if self.images is not None:
                self.images.release(job_hex)
            self.unpublished.pop(job_hex, None)
            self._capacity_freed = self.reservations.pop(job_hex, None) is not None or self._capacity_freed
            self.running.pop(job_hex, None)
            self.wake()

    async def _run(
        self, job: Job, report: RunReport, running: Running
    ) -> tuple[ExecutionResult, str | None, list[OutputRef]]:
        """The result, the log's digest and the stored outputs."""
        spec = job.spec
        executor = self.executors().get(spec.requirements.executor)
        if executor is None:
            return (
                ExecutionResult(FAILED, f"this node has no {spec.requirements.executor} executor"),
                None,
                [],
            )
        admission = None
        if spec.datasets:
            try:
                image_id = getattr(executor, "image_id", None)
                admission = await admit(spec, self.me, self.datasets, job.datasets, image_id)
            except Refused as exc:
                return ExecutionResult(FAILED, str(exc)), None, []
        try:
            await self.fetch_inputs(spec, job)
        except FetchError as exc:
            reason = f"could not fetch the job's input: {exc}"
            if any(self.node.peer_status(n) in scheduling.LIVE_STATUSES for n in _input_holders(spec, job)):
                # A holder lives (or is not known dead), so the fault may be this node's path to
                # it (a link down between two hosts): the next node tries. With none, no node can.
                return ExecutionResult(DECLINED, reason), None, []
            return ExecutionResult(FAILED, reason), None, []
        if running.cancel.is_set():
            return ExecutionResult(CANCELLED, running.stop_reason), None, []
        if self.images is not None and spec.requirements.executor == "podman":
            missing = await self.images.ensure(job.job_hex, await self._images_needed(spec), spec.pull)
            if missing is not None:
                return ExecutionResult(DECLINED, missing), None, []
            if running.cancel.is_set():
                return ExecutionResult(CANCELLED, running.stop_reason), None, []
        current = self._own_current(job.job_hex, report)
        if current.state == CLAIMED:
            reason, started_ms = f"running on {self.node.identity.node_hex[:12]}", node_now_ms(self.node)
            held = self.unpublished.get(job.job_hex)
            if held is None:
                self.write_run(job.job_hex, current, RUNNING, reason=reason, started_ms=started_ms)
            elif (
                running_report := self._next_report(
                    job.job_hex, current, RUNNING, reason=reason, started_ms=started_ms
                )
            ) is not None:
                self.unpublished[job.job_hex] = (held[0], running_report)
        elif current.state != RUNNING:
            return ExecutionResult(CANCELLED, "claim no longer held"), None, []
        run_dir = self.work_dir / f"{job.job_hex}-{report.attempt}-{os.urandom(4).hex()}"
        log_path = run_dir.with_suffix(".log")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "w", encoding="utf-8")

        async def log(line: str) -> None:
            log_file.write(line if line.endswith("\n") else line + "\n")
            log_file.flush()

        self.live_logs.open(job.job_hex, log_path)
        try:
            result = await run_job(
                executor,
                spec,
                run_dir / "work",
                run_dir / "result",
                self._blob_path,
                log,
                running.cancel,
                self.limits,
                running.gpus,
                datasets=admission.mounts if admission is not None else None,
            )
        finally:
            log_file.close()
            self.live_logs.close(job.job_hex)
        over_cap = cap_refusal(admission.cap, result.outputs, log_path) if admission is not None else None
        if over_cap is not None:
            self.node.log.warning("job outputs withheld", job=job.job_hex[:12], reason=over_cap)
            log_path.unlink(missing_ok=True)
            await trio.to_thread.run_sync(remove_tree, run_dir)
            return ExecutionResult(FAILED, over_cap, exit_code=result.exit_code), None, []
        if self.images is not None and spec.tag and result.state == SUCCEEDED and result.image_id:
            await self.images.adopt(result.image_id)  # kept under its --tag: published, cached

        def store() -> tuple[str, list[OutputRef]]:  # one trip to a worker thread for every file
            try:
                log_digest = self.blobs.put_file(log_path)
                return log_digest, [
                    OutputRef(item.name, self.blobs.put_file(item.path, item.digest), item.size)
                    for item in result.outputs
                ]
            finally:  # its outputs are in the blob store; nothing else removes the run dir
                log_path.unlink(missing_ok=True)
                remove_tree(run_dir)

        log_digest, outputs = await trio.to_thread.run_sync(store)
        return result, log_digest, outputs

    async def fetch_live_log(self, node_id: bytes, job_hex: str, offset: int) -> bytes | None:
        """A chunk of the log of a run in progress on `node_id` (this node or a peer)."""
        if node_id == self.me:
            return self.live_logs.read(job_hex, offset)
        addresses = self.addresses([node_id])
        if not addresses:
            return None
        return await request_live_log(
            self.node.transport, addresses[0], job_hex, offset, self.node.settings.request_timeout
        )

    def _blob_path(self, digest: str) -> Path | None:
        return self.blobs.path(digest) if self.blobs.has(digest) else None

    async def _images_needed(self, spec: JobSpec) -> list[str]:
        """A run's image; the images a build's Containerfile is FROM (read from its context)."""
        if spec.kind == "run":
            return [spec.image] if spec.image else []
        if spec.kind != "build" or spec.context is None:
            return []
        text = await trio.to_thread.run_sync(text_member, self.blobs.path(spec.context), spec.containerfile)
        return base_images(text) if text is not None else []

    async def fetch_inputs(self, spec: JobSpec, job: Job | None = None) -> None:
        """From the submitter first, then from nodes that ran the job before (they fetched it)."""
        holders = self.addresses(_input_holders(spec, job))
        for digest in spec_blobs(spec):
            if not self.blobs.has(digest):  # held already (often: contexts repeat): no lock, no fetch
                await self.fetch(digest, holders)

    async def fetch(self, digest: str, holders: list[str]) -> None:
        await self.fetcher.fetch(digest, holders)

    def addresses(self, node_ids: list[bytes]) -> list[str]:
        records = self.node.document.node_records()
        return [records[n].address for n in node_ids if n in records and n != self.me]


def _input_holders(spec: JobSpec, job: Job | None) -> list[bytes]:
    """Who holds a job's inputs: its submitter, then the nodes that ran it (they fetched them)."""
    ran = [
        n
        for n, r in (job.runs.items() if job else ())
        if r.state not in (DECLINED, CLAIMED) and n != spec.submitter
    ]
    return [spec.submitter, *ran]


def _waits_on_time(spec: JobSpec) -> bool:
    return spec.retries > 0 or spec.queue_timeout_ms is not None


def _result_digest(outputs: list[OutputRef]) -> str:
    """What replicas compare: blake3 over the sorted (name, digest) pairs."""
    text = "\n".join(f"{o.name} {o.digest}" for o in sorted(outputs, key=lambda o: o.name))
    return blake3.blake3(text.encode()).hexdigest()
