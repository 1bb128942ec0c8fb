"""Control methods for jobs and blobs (registered by daemon/control/api.py).

blob.put-fd {} + an open file (SCM_RIGHTS)            -> {"digest", "size"}  (copied and hashed in one pass)
blob.open  {"digest"}                                  -> {"size"} + the blob as an open file (read-only)
blob.put   {"digest", "size", "offset", "data": b64}  -> {"offset", "complete"}  (clients that cannot pass files)
blob.read  {"digest", "offset", "length"}              -> {"size", "data": b64}      (the same: the HTTP API)
           (blob.open and blob.read never give a dataset's digest or any of its files')
           (blob sizes: at most the larger of the context and input limits)
job.limits {}                                       -> {"max_context_bytes", "max_input_bytes"}
job.submit {"kind", "context", "containerfile", "image", "command", "module", "inputs": [[name, digest]],
            "requirements": {"cpu", "memory", "disk", "gpu", "gpu_model", "gpu_memory", "labels", "prefer",
                             "select", "capabilities", "region"},
            "timeout_ms", "env", "network", "replicas", "prefer_local_inputs", "placement_key",
            "retries", "retry_delay_ms", "queue_timeout_ms", "pull", "tag", "datasets": [name]}
           -> {"id"}   (durable before the reply)
           with "shards": N [, "split_inputs": true]: N shard jobs -> {"id": group, "shards": [ids]}
job.submit-many {"jobs": [job.submit params, ...]}    -> {"ids": [...]}  (all or none; one fsync)
job.status {"job": id or prefix >= 8 hex}              -> status object (see `status_object`);
             for a shard group, the group's (pack_manager/shards.py group_status)
job.list   {"state": optional}                         -> [status object, ...]
job.cancel {"job"}                                     -> {"id", "cancelled": true}
job.explain {"job"}                                    -> {"id", "policy", "state", "reason", "nodes": [...]}
job.plan   {job.submit params; blobs need not be stored} -> {"policy", "placement_key", "note", "nodes": [...]}
             a dry run: explain's rows for the job as submitted; writes nothing
job.files  {"job", "which": "outputs" | "log"}         -> [{"name", "digest", "size"}] (fetched here first)
job.log    {"job", "offset", "as_file"}                -> {"data": b64, "offset", "done", "state"}
             live from the runner while it runs, then from the stored log blob; done = final and all sent;
             with as_file, a stored log comes as an open file instead: {"data": "", "offset", "size",
             "done": true, "state"} + the log blob (read-only, from its start)
job.records {}                                         -> {"jobs": [key], "runs": [key], "cancels": [key]}
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import errno
import os
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import trio

from crdt_state.records import RecordError
from daemon.control.access import Forbidden, current_caller
from daemon.control.server import ControlError, Handler, TakesFile, WithFile, param
from daemon.jobs.blobfetch import FetchError
from daemon.jobs.blobstore import BlobError, BlobWriter
from daemon.jobs.keyed_locks import KeyedLocks
from daemon.jobs.loop import JobLoop
from daemon.jobs.records import spec_blobs
from pack_manager import scheduling
from pack_manager.datasets import job_catalog
from pack_manager.fit import check_capacity
from pack_manager.image_refs import DEFAULT_PULL
from pack_manager.jobspec import JobInput, JobSpec, JobSpecError, is_digest
from pack_manager.jobstate import JOB_STATES
from pack_manager.requirements import RequirementsError, WorkloadRequirements
from pack_manager.shards import group_status, shard_specs

MIN_PREFIX = 8
UNFINISHED = ("queued", "claimed", "running", "unschedulable")
MAX_BATCH = 1000  # jobs per job.submit-many request
REQUIREMENT_KEYS = {
    "cpu",
    "memory",
    "disk",
    "gpu",
    "gpu_model",
    "gpu_memory",
    "labels",
    "prefer",
    "select",
    "capabilities",
    "region",
}


def _piece(params: dict[str, Any]) -> bytes:
    """blob.put's data: base64 text from the socket, or the bytes of an HTTPS upload's body
    (daemon/control/http_api.py calls the method in-process; JSON can never carry bytes)."""
    data = params.get("data")
    if isinstance(data, bytes):
        return data
    try:
        return base64.b64decode(param(params, "data", str), validate=True)
    except (binascii.Error, ValueError):
        raise ControlError("parameter 'data': not base64") from None


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(
        timespec="milliseconds"
    )


class JobsApi:
    def __init__(self, jobs: JobLoop) -> None:
        self.jobs = jobs
        self.blobs = jobs.blobs
        self._writers: dict[str, BlobWriter] = {}
        # Pieces of one blob from several clients (one input uploaded twice at once) take turns:
        # none lands while the blob is being finished and installed.
        self._uploading = KeyedLocks()
        # Blobs stored by blob.put that no job names yet (kept by the loop's blob collection):
        # a submit that is refused deletes the ones it named, so nothing of it stays behind.
        self.uploads = jobs.pending_uploads

    def methods(self) -> dict[str, Handler]:
        return {
            "blob.put-fd": TakesFile(self.blob_put_fd),
            "blob.open": self.blob_open,
            "blob.put": self.blob_put,
            "blob.read": self.blob_read,
            "job.limits": self.limits,
            "job.submit": self.submit,
            "job.submit-many": self.submit_many,
            "job.status": self.status,
            "job.list": self.list,
            "job.cancel": self.cancel,
            "job.explain": self.explain,
            "job.plan": self.plan,
            "job.files": self.files,
            "job.log": self.log,
            "job.records": self.records,
        }

    # ---- blobs -------------------------------------------------------------------------------

    async def blob_put(self, params: dict[str, Any]) -> Any:
        digest = param(params, "digest", str)
        size = param(params, "size", int)
        offset = param(params, "offset", int)
        data = _piece(params)
        largest = max(self.jobs.limits.max_context_bytes, self.jobs.limits.max_input_bytes)
        if size < 0 or not 0 <= offset <= size:
            raise ControlError("parameters 'size' and 'offset': need 0 <= offset <= size")
        if size > largest:
            raise ControlError(
                f"blob of {size:,} bytes is over this node's {largest:,}-byte limit for contexts and inputs"
            )
        try:
            async with self._uploading.hold(digest):
                if self.blobs.has(digest):
                    self.uploads[digest] = trio.current_time()  # kept for the submit that names it
                    return {"offset": size, "complete": True}
                writer = self._writers.get(digest)
                if writer is None or writer.size != size:
                    # Resuming reads (and hashes) what an earlier upload left: not in the event loop.
                    writer = await trio.to_thread.run_sync(
                        partial(self.blobs.writer, digest, size, upload=True)
                    )
                    self._writers[digest] = writer
                if offset != writer.offset:
                    return {"offset": writer.offset, "complete": False}  # the client resends from here
                writer.write(data)
                if writer.complete:
                    del self._writers[digest]
                    await trio.to_thread.run_sync(writer.finish)
                    self.uploads[digest] = trio.current_time()
                    return {"offset": size, "complete": True}
                return {"offset": writer.offset, "complete": False}
        except BlobError as exc:
            self._writers.pop(digest, None)
            raise ControlError(str(exc)) from None

    def _refuse_dataset(self, digest: str) -> None:
        """A dataset's blobs never leave their holder, whoever asks (one log line each time)."""
        if self.jobs.never_served(digest):
            self.jobs.log.warning("dataset blob refused to a client", digest=digest[:12])
            raise ControlError(f"blob {digest[:12]} belongs to a dataset; datasets never leave their holder")

    async def blob_read(self, params: dict[str, Any]) -> Any:
        digest = param(params, "digest", str)
        offset = param(params, "offset", int)
        length = min(param(params, "length", int), 512 * 1024)
        self._refuse_dataset(digest)
        try:
            if self.blobs.has(digest) and not 0 <= offset <= self.blobs.size(digest):
                raise ControlError(f"parameter 'offset': outside 0..{self.blobs.size(digest)}")
            data = self.blobs.read_chunk(digest, offset, length)
            return {"size": self.blobs.size(digest), "data": base64.b64encode(data).decode("ascii")}
        except (BlobError, OSError) as exc:
            raise ControlError(str(exc)) from None

    async def blob_put_fd(self, params: dict[str, Any], fd: int) -> Any:
        largest = max(self.jobs.limits.max_context_bytes, self.jobs.limits.max_input_bytes)
        for _ in range(2):
            try:
                digest, size = await trio.to_thread.run_sync(self.blobs.put_fd, fd, largest)
            except BlobError as exc:
                raise ControlError(str(exc)) from None
            except OSError as exc:
                raise ControlError(f"the file passed cannot be read: {_os_reason(exc)}") from None
            self.uploads[digest] = trio.current_time()  # kept for the submit that names it
            # A copy of a blob already held is dropped; the sweep may have deleted the held one
            # (unnamed for a retention period) while the copy was made. Kept now, so copy again.
            if self.blobs.has(digest):
                return {"digest": digest, "size": size}
        raise ControlError(f"blob {digest[:12]} was deleted as it was stored; try again")

    async def blob_open(self, params: dict[str, Any]) -> Any:
        digest = param(params, "digest", str)
        self._refuse_dataset(digest)
        try:
            fd = self.blobs.open_fd(digest)
        except BlobError as exc:
            raise ControlError(str(exc)) from None
        return WithFile({"size": os.fstat(fd).st_size}, fd)

    # ---- submit ------------------------------------------------------------------------------

    async def limits(self, params: dict[str, Any]) -> Any:
        return {
            "max_context_bytes": self.jobs.limits.max_context_bytes,
            "max_input_bytes": self.jobs.limits.max_input_bytes,
        }

    def _check_quota(self, adding: int) -> None:
        """A client with max_running may hold at most that many unfinished jobs."""
        caller = current_caller.get()
        if caller.client is None or caller.max_running is None:
            return
        nodes = self.jobs.node_views()
        orders = self.jobs.orders_for(nodes)
        unfinished = sum(
            1
            for job in self.jobs.jobs().values()
            if job.spec.client == caller.client
            and self.status_object(job, nodes, orders)["state"] in UNFINISHED
        )
        if unfinished + adding > caller.max_running:
            raise ControlError(
                f"quota: this client has {unfinished} queued or running job(s) of at most {caller.max_running}"
            )

    async def submit(self, params: dict[str, Any]) -> Any:
        """One job; with "shards": N, N shard jobs of one group, written together (all or none)."""
        shards = param(params, "shards", int, optional=True, default=0)
        split = param(params, "split_inputs", bool, optional=True, default=False)
        self._check_quota(max(1, shards))  # each shard is a job of its own
        with self._discarding_uploads_on_refusal([params]):
            spec = self._accept(params)
            if shards or split:
                try:
                    specs = shard_specs(spec, shards, split)
                except JobSpecError as exc:
                    raise ControlError(str(exc)) from None
                sealed = [(shard, self._seal(shard)) for shard in specs]
                ids = [self._write_job(shard, envelope) for shard, envelope in sealed]
            else:
                ids = [self._write_job(spec, self._seal(spec))]
        await self.jobs.commit_durably()  # on disk before we answer
        self.jobs.log.info("job submitted", job=ids[0][:12], kind=spec.kind, shards=shards)
        self.jobs.wake()
        if shards:
            return {"id": specs[0].shard_group.hex(), "shards": ids}
        return {"id": ids[0]}

    async def submit_many(self, params: dict[str, Any]) -> Any:
        """Several jobs in one request, all or none: every spec is checked before any is
        written, and one fsync makes them all durable."""
        batch = param(params, "jobs", list)
        self._check_quota(len(batch))
        if not 1 <= len(batch) <= MAX_BATCH:
            raise ControlError(f"parameter 'jobs': 1 to {MAX_BATCH} job objects")
        sealed = []
        with self._discarding_uploads_on_refusal(batch):
            for number, item in enumerate(batch):
                if not isinstance(item, dict):
                    raise ControlError(f"jobs[{number}]: expected an object like job.submit's params")
                try:
                    spec = self._accept(item)
                    sealed.append((spec, self._seal(spec)))
                except ControlError as exc:
                    raise ControlError(f"jobs[{number}]: {exc}") from None
            # Sealed records of our own, under their own ids: put_local has nothing left to refuse.
            ids = [self._write_job(spec, envelope) for spec, envelope in sealed]
        await self.jobs.commit_durably()
        self.jobs.log.info("jobs submitted", count=len(ids))
        self.jobs.wake()
        return {"ids": ids}

    @contextmanager
    def _discarding_uploads_on_refusal(self, requests: list[Any]) -> Iterator[None]:
        """On a refusal, delete what blob.put stored for these requests and no job names."""
        try:
            yield
        except ControlError:
            named = {d for request in requests for d in _named_digests(request)}
            for digest in named & set(self.uploads):
                if not self.jobs.holders(digest) and digest not in self._writers:
                    self.blobs.delete(digest)
                del self.uploads[digest]
            raise
        for request in requests:
            for digest in _named_digests(request):
                self.uploads.pop(digest, None)

    def _accept(self, params: dict[str, Any], *, stored: bool = True) -> JobSpec:
        """The signed-to-be spec for submit params, or ControlError saying what is wrong.
        stored=False (a dry run): the blobs it names need not be in this node's store."""
        kind = param(params, "kind", str)
        raw_req = param(params, "requirements", dict, optional=True, default={})
        unknown = set(raw_req) - REQUIREMENT_KEYS
        if unknown:
            raise ControlError(f"requirements: unknown key(s) {', '.join(sorted(map(str, unknown)))[:200]}")
        try:
            requirements = WorkloadRequirements.from_human(
                cpu=_opt_str(raw_req, "cpu"),
                memory=_opt_str(raw_req, "memory"),
                disk=_opt_str(raw_req, "disk"),
                gpu=raw_req.get("gpu"),
                gpu_model=_opt_str(raw_req, "gpu_model"),
                gpu_memory=_opt_str(raw_req, "gpu_memory"),
                executor="wasm" if kind == "wasm" else "podman",
                labels=raw_req.get("labels") or [],
                preferred=raw_req.get("prefer") or [],
                select=_opt_list(raw_req, "select"),
                capabilities=_opt_list(raw_req, "capabilities"),
                region=_opt_str(raw_req, "region"),
            )
            inputs = _inputs(param(params, "inputs", list, optional=True, default=[]))
            spec = JobSpec(
                kind=kind,
                submitter=self.jobs.me,
                nonce=os.urandom(16),
                context=param(params, "context", str, optional=True),
                containerfile=param(params, "containerfile", str, optional=True, default="Containerfile"),
                image=param(params, "image", str, optional=True),
                command=tuple(param(params, "command", list, optional=True, default=[])),
                module=param(params, "module", str, optional=True),
                inputs=inputs,
                requirements=requirements,
                timeout_ms=param(params, "timeout_ms", int, optional=True, default=3600 * 1000),
                env=param(params, "env", dict, optional=True, default={}),
                network=param(params, "network", bool, optional=True, default=False),
                replicas=param(params, "replicas", int, optional=True, default=1),
                prefer_local_inputs=param(params, "prefer_local_inputs", bool, optional=True, default=False),
                placement_key=param(params, "placement_key", str, optional=True),
                retries=param(params, "retries", int, optional=True, default=0),
                retry_delay_ms=param(params, "retry_delay_ms", int, optional=True, default=0),
                queue_timeout_ms=param(params, "queue_timeout_ms", int, optional=True),
                client=current_caller.get().client,
                pull=param(params, "pull", str, optional=True, default=DEFAULT_PULL),
                tag=param(params, "tag", str, optional=True),
                datasets=tuple(param(params, "datasets", list, optional=True, default=[])),
            )
        except (RequirementsError, JobSpecError, TypeError, ValueError) as exc:
            raise ControlError(str(exc)) from None
        catalog = self.jobs.dataset_catalog.catalog()
        unknown = [name for name in spec.datasets if not catalog.get(name)]
        if unknown:
            raise ControlError(f"no node holds dataset {', '.join(unknown)} (see form datasets)")
        if not stored:
            return spec
        limits = self.jobs.limits
        for digest in spec_blobs(spec):
            if not self.blobs.has(digest):
                raise ControlError(
                    f"blob {digest[:12]} is not in this node's store; upload it first (blob.put)"
                )
        if spec.context is not None and self.blobs.size(spec.context) > limits.max_context_bytes:
            raise ControlError(
                f"context is {self.blobs.size(spec.context):,} bytes, over the {limits.max_context_bytes:,}-byte limit"
            )
        total_inputs = sum(self.blobs.size(i.digest) for i in spec.inputs)
        if total_inputs > limits.max_input_bytes:
            raise ControlError(
                f"inputs are {total_inputs:,} bytes together, over the {limits.max_input_bytes:,}-byte limit"
            )
        return spec

    def _seal(self, spec: JobSpec) -> bytes:
        try:
            return self.jobs.sign("job", {"spec": spec.pack(), "submitted_ms": self.jobs.now_ms()})
        except RecordError as exc:
            raise ControlError(f"job record refused: {exc}") from None

    def _write_job(self, spec: JobSpec, envelope: bytes) -> str:
        job_hex = spec.job_id().hex()
        try:
            self.jobs.write_job(job_hex, spec, envelope)
        except RecordError as exc:
            raise ControlError(f"job record refused: {exc}") from None
        return job_hex

    # ---- reading -----------------------------------------------------------------------------

    def _resolve(self, params: dict[str, Any]) -> tuple[Any, dict]:
        text = param(params, "job", str).strip().lower()
        if len(text) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in text) or len(text) > 64:
            raise ControlError(
                f"job id {text!r:.80}: give the 64-hex id or a unique prefix of at least {MIN_PREFIX} hex digits"
            )
        jobs = self.jobs.jobs()
        found = [k for k in jobs if k.startswith(text)]
        if not found:
            raise ControlError(f"no job {text} known on this node")
        if len(found) > 1:
            raise ControlError(
                f"job prefix {text} is ambiguous: {', '.join(k[:16] for k in sorted(found)[:5])}"
            )
        return jobs[found[0]], jobs

    def status_object(self, job, nodes, orders=None) -> dict[str, Any]:
        """orders: self.jobs.orders_for(nodes), when the caller shows many jobs."""
        orders = orders or self.jobs.orders_for(nodes)
        status = scheduling.job_status(job.view(), nodes, self.jobs.policy, orders.order(job))
        run = status.run
        return {
            "id": job.job_hex,
            "kind": job.spec.kind,
            "state": status.state,
            "reason": status.reason,
            "reasons": list(status.reasons),
            "node": status.node.hex() if status.node else None,
            "attempt": status.attempt,
            "submitted_at": _iso(job.submitted_ms),
            "started_at": _iso(run.started_ms) if run else None,
            "finished_at": _iso(run.finished_ms) if run else None,
            "exit_code": run.exit_code if run else None,
            "outputs": [o.to_wire() for o in run.outputs] if run else [],
            "log": run.log_digest if run else None,
            "replicas": [
                {"node": r.node.hex(), "state": r.state, "digest": r.digest} for r in status.replicas
            ],
            "verified": status.verified,
            "verify_reason": status.verify_reason,
            "attempts": [
                {"attempt": a.attempt, "node": a.node.hex(), "state": a.state, "reason": a.reason}
                for a in status.attempts
            ],
            "client": job.spec.client,
        }

    async def status(self, params: dict[str, Any]) -> Any:
        group = self._group(params)
        if group is not None:
            nodes = self.jobs.node_views()
            orders = self.jobs.orders_for(nodes)
            return group_status(group[0], [self.status_object(job, nodes, orders) for job in group[1]])
        job, _ = self._resolve(params)
        return self.status_object(job, self.jobs.node_views())

    def _group(self, params: dict[str, Any]) -> tuple[str, list] | None:
        """(group id, its shard jobs by index) when the id names a sharded job's group."""
        text = param(params, "job", str).strip().lower()
        if len(text) < MIN_PREFIX:
            return None
        groups: dict[str, list] = {}
        for job in self.jobs.jobs().values():
            if job.spec.shard_group is not None and job.spec.shard_group.hex().startswith(text):
                groups.setdefault(job.spec.shard_group.hex(), []).append(job)
        if len(groups) != 1:
            return None
        ((group_hex, jobs),) = groups.items()
        return group_hex, sorted(jobs, key=lambda job: job.spec.shard_index)

    async def list(self, params: dict[str, Any]) -> Any:
        wanted = param(params, "state", str, optional=True)
        if wanted is not None and wanted not in JOB_STATES:
            raise ControlError(f"state {wanted!r} is not one of {', '.join(JOB_STATES)}")
        nodes = self.jobs.node_views()
        orders = self.jobs.orders_for(nodes)
        out = [self.status_object(job, nodes, orders) for job in self.jobs.jobs().values()]
        out = [o for o in out if wanted is None or o["state"] == wanted]
        out.sort(key=lambda o: (o["submitted_at"] or "", o["id"]))
        return out

    async def records(self, params: dict[str, Any]) -> Any:
        """The job-related keys of this node's document (to compare replicas; retired ones are gone)."""
        return self.jobs.job_keys()

    async def cancel(self, params: dict[str, Any]) -> Any:
        group = self._group(params)
        if group is not None:
            for job in group[1]:
                await self.cancel({"job": job.job_hex})
            return {"id": group[0], "cancelled": True}
        job, _ = self._resolve(params)
        caller = current_caller.get()
        if not caller.is_admin and job.spec.client != caller.client:
            raise Forbidden(
                f"job {job.job_hex[:12]} was submitted by another client; only it or an admin may cancel it"
            )
        if job.cancelled:
            return {"id": job.job_hex, "cancelled": True}
        envelope = self.jobs.sign(
            "cancel", {"reason": "cancelled by request", "requested_ms": self.jobs.now_ms()}
        )
        try:
            self.jobs.write_cancel(job.job_hex, envelope)
        except RecordError as exc:
            raise ControlError(f"cancel refused: {exc}") from None
        await self.jobs.commit_durably()
        self.jobs.wake()
        return {"id": job.job_hex, "cancelled": True}

    async def explain(self, params: dict[str, Any]) -> Any:
        group = self._group(params)
        if group is not None:
            shards = ", ".join(f"{job.spec.shard_index}: {job.job_hex[:16]}" for job in group[1])
            raise ControlError(f"job {group[0][:16]} is sharded: explain one of its shards ({shards})")
        job, _ = self._resolve(params)
        nodes = self.jobs.node_views()
        status = self.status_object(job, nodes)
        return {
            "id": job.job_hex,
            "policy": self.jobs.policy,
            "prefer_local_inputs": job.spec.prefer_local_inputs,
            "placement_key": job.spec.placement_key,
            "blobs": len(set(spec_blobs(job.spec))),
            "state": status["state"],
            "reason": status["reason"],
            "nodes": self._ranked_rows(job.view(), nodes),
        }

    async def plan(self, params: dict[str, Any]) -> Any:
        """A dry run: the ranked table for a job as submit would write it. Writes nothing; the
        blobs it names need not have been uploaded."""
        spec = self._accept(params, stored=False)
        view = scheduling.JobView(
            spec.job_id(), spec, {}, datasets=job_catalog(spec, self.jobs.dataset_catalog.catalog())
        )
        note = (
            f"ranked by placement key {spec.placement_key!r}, as the job will be"
            if spec.placement_key is not None
            else "ranked by a provisional job id; the submitted job gets its own id and may rank "
            "other nodes first (use --placement-key for a fixed order)"
        )
        return {
            "policy": self.jobs.policy,
            "placement_key": spec.placement_key,
            "note": note,
            "nodes": self._ranked_rows(view, self.jobs.node_views()),
        }

    def _ranked_rows(self, view: scheduling.JobView, nodes: dict) -> list[dict[str, Any]]:
        """One row per known node, in placement order: fits ever, fits now, why not, its run."""
        requirements = view.spec.requirements
        order = scheduling.order_nodes(view, nodes, self.jobs.policy)
        # Blobs and the image, shown whether or not the job prefers holders.
        holdings = scheduling.local_holdings(
            dataclasses.replace(view, holdings=self.jobs.holdings(view.spec)),
            nodes,
        )
        records = self.jobs.node_records()
        rows = []
        for rank, node_id in enumerate(order, 1):
            node = nodes[node_id]
            never = scheduling.never_reasons(view, node_id, node)
            now = (
                check_capacity(node.capabilities, node.capacity, requirements)
                if node.capacity and not never
                else ()
            )
            run = view.runs.get(node_id)
            rows.append(
                {
                    "rank": rank,
                    "node": node_id.hex(),
                    "address": records[node_id].address if node_id in records else None,
                    "self": node_id == self.jobs.me,
                    "status": node.status,
                    "live": node.live,
                    "fits": not never,
                    "fits_now": not never and not now,
                    "reasons": list(never) + list(now),
                    "holds": holdings.get(node_id, 0),
                    "run": run.state if run else None,
                    "run_reason": run.reason if run else None,
                    "run_unable": bool(run and run.unable),
                }
            )
        return rows

    async def log(self, params: dict[str, Any]) -> Any:
        job, _ = self._resolve(params)
        offset = param(params, "offset", int, optional=True, default=0)
        as_file = param(params, "as_file", bool, optional=True, default=False)
        if offset < 0:
            raise ControlError("parameter 'offset': must be >= 0")
        status = self.status_object(job, self.jobs.node_views())
        try:
            if as_file and (stored := await _stored_log(self, job, status)) is not None:
                fd = self.blobs.open_fd(stored)
                reply = {"data": "", "offset": offset, "done": True, "state": status["state"]}
                return WithFile({**reply, "size": os.fstat(fd).st_size}, fd)
            data, done = await _log_chunk(self, job, status, offset)
        except (FetchError, BlobError) as exc:
            raise ControlError(str(exc)) from None
        return {
            "data": base64.b64encode(data).decode("ascii"),
            "offset": offset + len(data),
            "done": done,
            "state": status["state"],
        }

    async def files(self, params: dict[str, Any]) -> Any:
        job, _ = self._resolve(params)
        which = param(params, "which", str)
        if which not in ("outputs", "log"):
            raise ControlError("parameter 'which': outputs or log")
        status = self.status_object(job, self.jobs.node_views())
        holders = [bytes.fromhex(r["node"]) for r in status["replicas"] if r["state"] != "declined"]
        if status["node"]:
            holders.insert(0, bytes.fromhex(status["node"]))
        run = job.runs.get(bytes.fromhex(status["node"])) if status["node"] else None
        if run is None:
            raise ControlError(f"job {job.job_hex[:12]} has not run yet ({status['state']})")
        if which == "log":
            if run.log_digest is None:
                raise ControlError(f"job {job.job_hex[:12]} has no log yet ({status['state']})")
            wanted = [{"name": "log", "digest": run.log_digest, "size": None}]
        else:
            if not run.final:
                raise ControlError(f"job {job.job_hex[:12]} has no outputs yet ({status['state']})")
            wanted = [o.to_wire() for o in run.outputs]
        addresses = self.jobs.addresses(holders)
        for item in wanted:
            try:
                await self.jobs.fetch(item["digest"], addresses)
            except (FetchError, BlobError) as exc:
                raise ControlError(str(exc)) from None
            item["size"] = self.blobs.size(item["digest"])
        return wanted


async def _stored_log(api: "JobsApi", job, status: dict) -> str | None:
    """The digest of the job's final log, fetched here from its runner; None while it runs
    (or when it never ran or left no log)."""
    node_hex = status["node"]
    run = job.runs.get(bytes.fromhex(node_hex)) if node_hex else None
    if run is None or not run.final or run.log_digest is None:
        return None
    await api.jobs.fetch(run.log_digest, api.jobs.addresses([bytes.fromhex(node_hex)]))
    return run.log_digest


async def _log_chunk(api: "JobsApi", job, status: dict, offset: int) -> tuple[bytes, bool]:
    node_hex = status["node"]
    if node_hex is None:
        return b"", status["state"] in ("cancelled", "unschedulable")
    run = job.runs.get(bytes.fromhex(node_hex))
    if run is not None and run.final:
        stored = await _stored_log(api, job, status)
        if stored is None:
            return b"", True
        size = api.blobs.size(stored)
        data = api.blobs.read_chunk(stored, offset, 512 * 1024) if offset < size else b""
        return data, offset + len(data) >= size
    data = await api.jobs.fetch_live_log(bytes.fromhex(node_hex), job.job_hex, offset)
    return (data or b"")[: 512 * 1024], False


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.EBADF:
        return "it is not open for reading"
    return exc.strerror or str(exc)


def _named_digests(request: Any) -> set[str]:
    """Blob digests a submit request names (whether or not the request is valid)."""
    if not isinstance(request, dict):
        return set()
    named = [request.get("context"), request.get("module")]
    inputs = request.get("inputs")
    if isinstance(inputs, list):
        named += [item[1] for item in inputs if isinstance(item, (list, tuple)) and len(item) == 2]
    return {d for d in named if isinstance(d, str) and is_digest(d)}


def _inputs(raw: list) -> tuple[JobInput, ...]:
    if not all(
        isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item) for item in raw
    ):
        raise ControlError("parameter 'inputs': expected [[name, digest], ...] with text names and digests")
    return tuple(JobInput(name, digest) for name, digest in raw)


def _opt_list(raw: dict, key: str) -> list[str]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequirementsError(f"{key}: expected a list of text")
    return value


def _opt_str(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequirementsError(f"{key}: expected text like '500m', '2', '4GiB'")
    return value
