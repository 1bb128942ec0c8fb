"""The document's jobs, runs and cancels, decoded once per change and kept up to date.

The job loop runs a pass on every document change; with hundreds of jobs in the document,
decoding every record and re-deciding every job on each pass made a pass O(jobs) and a burst
of jobs O(jobs²). `refresh()` walks the three maps and compares each entry with the one it
decoded before by identity (the document makes a new entry object whenever a value changes),
decodes only what is new, and remembers which jobs changed until the loop takes them
(`take_changed`). After the first walk it looks only at the keys the document said changed
(ClusterDocument.watch): walking 1500 records per pass costs more than the pass itself.
Readers that are not the loop (the control API) may refresh at any time
without hiding changes from it.

Records (bodies; envelopes are signed by their writer):
    jobs[job_hex]               {"spec": JobSpec.pack(), "submitted_ms": int}
    runs[f"{job_hex}:{node}"]   RunReport.to_wire()
    cancels[job_hex]            {"reason": str, "requested_ms": int}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from crdt_state.document import ClusterDocument
from metrics_agent.wire import WireError
from pack_manager import scheduling
from pack_manager.jobspec import JobSpec, JobSpecError, is_digest
from pack_manager.jobstate import RunReport
from pack_manager.retention import stamp_ms

MAPS = ("jobs", "runs", "cancels")


@dataclass
class Job:
    job_hex: str
    spec: JobSpec
    submitted_ms: int
    runs: dict[bytes, RunReport] = field(default_factory=dict)
    cancelled: bool = False
    holdings: dict[bytes, int] = field(default_factory=dict)  # only filled for prefer_local_inputs

    def view(self) -> scheduling.JobView:
        return scheduling.JobView(
            bytes.fromhex(self.job_hex),
            self.spec,
            self.runs,
            self.cancelled,
            self.holdings,
            self.submitted_ms,
        )


def spec_blobs(spec: JobSpec) -> list[str]:
    """The blobs a job needs on the node that runs it (a module named by path is inside the context)."""
    wanted = [d for d in [spec.context, spec.module] if d is not None and is_digest(d)]
    return wanted + [item.digest for item in spec.inputs]


def decode_job(key: str, body: dict) -> tuple[JobSpec, int]:
    """A job record's spec and submit time; JobSpecError when it is not a usable job."""
    packed = body.get("spec")
    if not isinstance(packed, bytes):
        raise JobSpecError("job record: no spec")
    spec = JobSpec.unpack(packed)
    if spec.job_id().hex() != key:
        raise JobSpecError("job record: the key is not the spec's id")
    return spec, submitted_ms(body)


def submitted_ms(body: dict) -> int:
    submitted = body.get("submitted_ms", 0)
    return submitted if isinstance(submitted, int) and not isinstance(submitted, bool) else 0


class JobRecords:
    def __init__(
        self, document: ClusterDocument, on_bad_job: Callable[[str, str], None] | None = None
    ) -> None:
        self.document = document
        self._on_bad_job = on_bad_job
        self._seen: dict[str, dict[str, object]] = {name: {} for name in MAPS}
        self.specs: dict[str, tuple[JobSpec, int]] = {}
        self.runs: dict[
            str, dict[bytes, RunReport]
        ] = {}  # job hex -> node id -> report, with or without a job record
        self.cancels: dict[str, int] = {}  # job hex -> the cancel's stamp (pack_manager.retention.stamp_ms)
        self._changed: set[str] = set()
        self.released: set[str] = set()  # digests no record names any more (their jobs retired)
        # Who holds which blob, as the document tells it (the same on every node): a job's
        # submitter holds its blobs (it stored them to submit), a node whose run of a job got
        # as far as running fetched them, and a node that finished a run holds its outputs.
        # digest -> node -> how many records say so; contributions by record, to undo them.
        self._holders: dict[str, dict[bytes, int]] = {}
        self._contributions: dict[tuple[str, bytes], frozenset[str]] = {}  # (job hex, node) -> digests
        self._contributors: dict[str, set[bytes]] = {}  # job hex -> nodes with a contribution
        self._dirty: set[tuple[str, str]] | None = None  # keys changed since the last refresh; None: walk all
        # Specs this node just wrote (jobs_api): decoding our own job record again costs more
        # than the rest of a submit. Taken when the record is read, if it holds these bytes.
        self._written: dict[str, JobSpec] = {}
        document.watch(self._note_dirty)

    def _note_dirty(self, map_name: str, key: str) -> None:
        if self._dirty is not None and map_name in MAPS:
            self._dirty.add((map_name, key))

    def refresh(self) -> None:
        if self._dirty is None:
            self._dirty = set()
            self._walk_all()
            return
        dirty, self._dirty = self._dirty, set()
        for map_name, key in sorted(
            dirty, key=lambda change: MAPS.index(change[0])
        ):  # jobs before their runs
            entry = self.document.get(map_name, key)
            seen = self._seen[map_name]
            if entry is None:
                if seen.pop(key, None) is not None:
                    self._drop(map_name, key)
            elif seen.get(key) is not entry:
                seen[key] = entry
                self._take(map_name, key, entry.body)

    def _walk_all(self) -> None:
        for map_name in MAPS:
            current = self.document.items(map_name)
            seen = self._seen[map_name]
            for key, entry in current.items():
                if seen.get(key) is not entry:
                    seen[key] = entry
                    self._take(map_name, key, entry.body)
            if len(seen) > len(current):  # every current key is in seen: the rest left the document (retired)
                for key in [k for k in seen if k not in current]:
                    del seen[key]
                    self._drop(map_name, key)

    def take_changed(self) -> set[str]:
        """Job ids whose records changed (or went) since the last call; refreshes first."""
        self.refresh()
        changed, self._changed = self._changed, set()
        return changed

    def wrote(self, job_hex: str, spec: JobSpec) -> None:
        """This node wrote job_hex's record with this spec (so reading it back needs no decode)."""
        self._written[job_hex] = spec

    def _take(self, map_name: str, key: str, body: object) -> None:
        if map_name == "jobs":
            written = self._written.pop(key, None)
            try:
                if written is not None and isinstance(body, dict) and body.get("spec") == written.pack():
                    self.specs[key] = (written, submitted_ms(body))
                else:
                    self.specs[key] = decode_job(key, body if isinstance(body, dict) else {})
            except JobSpecError as exc:
                self.specs.pop(key, None)
                if self._on_bad_job is not None:
                    self._on_bad_job(key, str(exc))
                return
            self._changed.add(key)
            self._recount_job(key)
        elif map_name == "runs":
            job_hex, node_id = split_run_key(key)
            if node_id is None:
                return
            try:
                report = RunReport.from_wire(body)
            except (WireError, ValueError):
                self._drop_run(job_hex, node_id)
                return
            self.runs.setdefault(job_hex, {})[node_id] = report
            self._changed.add(job_hex)
            self._recount(job_hex, node_id)
        else:
            self.cancels[key] = stamp_ms("cancels", body)
            self._changed.add(key)

    def _drop(self, map_name: str, key: str) -> None:
        if map_name == "jobs":
            self.specs.pop(key, None)
            self._changed.add(key)
            self._recount_job(key)
        elif map_name == "runs":
            job_hex, node_id = split_run_key(key)
            if node_id is not None:
                self._drop_run(job_hex, node_id)
        else:
            self.cancels.pop(key, None)
            self._changed.add(key)

    def _drop_run(self, job_hex: str, node_id: bytes) -> None:
        runs = self.runs.get(job_hex)
        if runs is not None and runs.pop(node_id, None) is not None:
            self._changed.add(job_hex)
            if not runs:
                del self.runs[job_hex]
            self._recount(job_hex, node_id)

    # ---- who holds which blob ----------------------------------------------------------------

    def _recount_job(self, job_hex: str) -> None:
        """A job record came or went: its submitter's claim and its runs' claims change."""
        held = self.specs.get(job_hex)
        submitter = held[0].submitter if held is not None else None
        nodes = set(self._contributors.get(job_hex, ())) | set(self.runs.get(job_hex, {}))
        if submitter is not None:
            nodes.add(submitter)
        for node_id in nodes:
            self._recount(job_hex, node_id)

    def _recount(self, job_hex: str, node_id: bytes) -> None:
        held = self.specs.get(job_hex)
        run = self.runs.get(job_hex, {}).get(node_id)
        digests: set[str] = set()
        if held is not None and (held[0].submitter == node_id or (run is not None and run.started_ms > 0)):
            digests.update(spec_blobs(held[0]))
        if run is not None and run.final:
            digests.update(o.digest for o in run.outputs)
            if run.log_digest is not None:
                digests.add(run.log_digest)
        new = frozenset(digests)
        old = self._contributions.pop((job_hex, node_id), frozenset())
        contributors = self._contributors.setdefault(job_hex, set())
        if new:
            self._contributions[(job_hex, node_id)] = new
            contributors.add(node_id)
        else:
            contributors.discard(node_id)
            if not contributors:
                del self._contributors[job_hex]
        for digest in old - new:
            counts = self._holders[digest]
            counts[node_id] -= 1
            if not counts[node_id]:
                del counts[node_id]
                if not counts:
                    del self._holders[digest]
                    self.released.add(digest)
        for digest in new - old:
            counts = self._holders.setdefault(digest, {})
            counts[node_id] = counts.get(node_id, 0) + 1
            self.released.discard(digest)

    def holders(self, digest: str) -> set[bytes]:
        """Nodes the document says hold this blob."""
        return set(self._holders.get(digest, ()))

    def holdings(self, spec: JobSpec) -> dict[bytes, int]:
        """node -> how many of the spec's blobs it holds, by the document."""
        counts: dict[bytes, int] = {}
        for digest in set(spec_blobs(spec)):
            for node_id in self._holders.get(digest, ()):
                counts[node_id] = counts.get(node_id, 0) + 1
        return counts

    # ---- reading ------------------------------------------------------------------------------

    def job(self, job_hex: str) -> Job | None:
        held = self.specs.get(job_hex)
        if held is None:
            return None
        spec = held[0]
        holdings = self.holdings(spec) if spec.prefer_local_inputs else {}
        return Job(
            job_hex, spec, held[1], dict(self.runs.get(job_hex, {})), job_hex in self.cancels, holdings
        )

    def jobs(self) -> dict[str, Job]:
        self.refresh()
        return {job_hex: job for job_hex in self.specs if (job := self.job(job_hex)) is not None}


def split_run_key(key: str) -> tuple[str, bytes | None]:
    job_hex, _, node_hex = key.partition(":")
    try:
        return job_hex, bytes.fromhex(node_hex) if len(node_hex) == 64 else None
    except ValueError:
        return job_hex, None
