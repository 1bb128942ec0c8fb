"""Retiring finished jobs and collecting their blobs: the I/O around pack_manager.retention.

The job loop calls `step` on every pass. Jobs whose records changed get a due time (when
they become retirable, if final); a heap hands back the due ones, which are checked again on
the current view and, when this node is the one to delete (or the grace has passed), deleted
together in one document transaction. The loop also sets `document.may_delete` to the
receivers' rule, so deletes from peers are taken exactly when retention allows them.

Blobs: when the records that named a blob are gone (retired here or by a peer), the blob is
deleted from this node's store, unless a fetch or an upload that no submit has named yet is
using it. A slower sweep collects blobs no record has named for a whole retention period
(left over by a crash between a retirement and its collection, or uploaded and never
submitted), and temporary files untouched for a sweep interval: partial fetches of blobs
nothing names any more, copies a crash cut short.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Callable

import trio

from daemon.jobs.blobstore import BlobStore
from daemon.jobs.placement_orders import OrderNodes
from daemon.jobs.records import JobRecords
from pack_manager import scheduling
from pack_manager.retention import RetentionRule, accepts_remote_delete, deletes_now, job_retirable, stamp_ms

if TYPE_CHECKING:
    from crdt_state.records import SignedEntry


class Retirement:
    def __init__(
        self,
        records: JobRecords,
        blobs: BlobStore,
        me: bytes,
        rule: RetentionRule,
        *,
        now_ms: Callable[[], int],
        in_use: Callable[[str], bool],
        policy: str,
        pending_uploads: dict[str, float] | None = None,
        order_nodes: OrderNodes = scheduling.order_nodes,
    ) -> None:
        self.records = records
        self.order_nodes = order_nodes
        self.blobs = blobs
        self.me = me
        self.rule = rule
        self.now_ms = now_ms
        self.in_use = in_use  # a fetch or a pending upload holds this digest
        self.policy = policy
        self.pending_uploads = pending_uploads if pending_uploads is not None else {}  # digest -> trio time
        self._due: dict[str, int] = {}  # job hex -> when it becomes retirable (final jobs, orphans)
        self._heap: list[tuple[int, str]] = []
        self._unnamed_since: dict[str, float] = {}  # digest -> trio time the sweep first saw it unnamed
        self._next_sweep = float("-inf")
        self.retired = 0
        self.collected = 0

    def may_delete(self, map_name: str, key: str, held: "SignedEntry | None") -> bool:
        """document.may_delete: take a peer's delete once retention allows it by our clock."""
        if held is None:
            return True
        return accepts_remote_delete(map_name, held.body, self.now_ms(), self.rule)

    # ---- which jobs are due -------------------------------------------------------------------

    def note(self, changed: set[str]) -> None:
        """Recompute the due time of jobs whose records changed."""
        for job_hex in changed:
            due = self._due_of(job_hex)
            if due is None:
                self._due.pop(job_hex, None)
            elif self._due.get(job_hex) != due:
                self._due[job_hex] = due
                heapq.heappush(self._heap, (due, job_hex))

    def _due_of(self, job_hex: str) -> int | None:
        """The earliest time the job's records (or orphan runs/cancel) may go. Whether it is
        final then is checked when it is due: finality can also change without a record
        changing (a replica's runner dies)."""
        stamps = self._stamps(job_hex)
        return max(stamps) + self.rule.retention_ms if stamps else None

    def _stamps(self, job_hex: str) -> list[int]:
        stamps = [
            stamp_ms("runs", report.to_wire()) for report in self.records.runs.get(job_hex, {}).values()
        ]
        if job_hex in self.records.specs:
            stamps.append(self.records.specs[job_hex][1])
        if job_hex in self.records.cancels:
            stamps.append(self.records.cancels[job_hex])
        return stamps

    # ---- retiring ---------------------------------------------------------------------------

    def due_deletes(
        self, nodes: dict[bytes, scheduling.NodeView], running: set[str]
    ) -> list[tuple[str, str]]:
        """The (map, key) entries this node should delete now."""
        now = self.now_ms()
        live = [node_id for node_id, view in nodes.items() if view.live]
        entries: list[tuple[str, str]] = []
        while self._heap and self._heap[0][0] <= now:
            due, job_hex = heapq.heappop(self._heap)
            if self._due.get(job_hex) != due:
                continue  # superseded by a newer due time
            if job_hex in running or not self._retirable(job_hex, nodes, now):
                self._later(job_hex, now)
                continue
            if not deletes_now(bytes.fromhex(job_hex), live, self.me, now, due, self.rule, self.policy):
                self._later(job_hex, due + self.rule.grace_ms)
                continue
            del self._due[job_hex]
            entries += self._entries(job_hex)
        return entries

    def _retirable(self, job_hex: str, nodes: dict[bytes, scheduling.NodeView], now: int) -> bool:
        job = self.records.job(job_hex)
        if job is None:
            return bool(self._stamps(job_hex)) and now >= max(self._stamps(job_hex)) + self.rule.retention_ms
        view = job.view()
        order = self.order_nodes(view, nodes, self.policy) if nodes else []
        state = scheduling.job_status(view, nodes, self.policy, order).state
        live_claims = sum(
            1 for node_id, run in job.runs.items() if run.active and node_id in nodes and nodes[node_id].live
        )
        return job_retirable(state, live_claims, self._stamps(job_hex), now, self.rule)

    def _later(self, job_hex: str, when: int) -> None:
        """Look again at `when` (the job's state or the deleter may have changed by then)."""
        when = max(when, self.now_ms() + min(self.rule.grace_ms, max(1000, self.rule.retention_ms)))
        self._due[job_hex] = when
        heapq.heappush(self._heap, (when, job_hex))

    def _entries(self, job_hex: str) -> list[tuple[str, str]]:
        entries = [("runs", f"{job_hex}:{node_id.hex()}") for node_id in self.records.runs.get(job_hex, {})]
        if job_hex in self.records.specs:
            entries.append(("jobs", job_hex))
        if job_hex in self.records.cancels:
            entries.append(("cancels", job_hex))
        return entries

    # ---- blobs ------------------------------------------------------------------------------

    def collect(self) -> list[str]:
        """Delete blobs whose naming records were retired (here or by a peer)."""
        released, self.records.released = self.records.released, set()
        return [digest for digest in released if self._collect(digest)]

    def sweep(self, interval_s: float) -> list[str]:
        """Every `interval_s`: delete blobs no record has named for a whole retention period."""
        now = trio.current_time()
        if now < self._next_sweep:
            return []
        self._next_sweep = now + interval_s
        for digest, stored in list(self.pending_uploads.items()):
            if (now - stored) * 1000 >= self.rule.retention_ms:
                del self.pending_uploads[digest]  # uploaded and never submitted: the sweep may take it
        seen = set()
        removed = []
        for digest in list(self.blobs.digests()):
            seen.add(digest)
            if self.records.holders(digest) or self.in_use(digest):
                self._unnamed_since.pop(digest, None)
                continue
            since = self._unnamed_since.setdefault(digest, now)
            if (now - since) * 1000 >= self.rule.retention_ms and self._collect(digest):
                removed.append(digest)
        for digest in set(self._unnamed_since) - seen:
            del self._unnamed_since[digest]
        # Partial fetches of blobs nothing names any more, and copies a crash cut short.
        self.blobs.remove_stale_temporaries(
            interval_s, keep=lambda digest: bool(self.records.holders(digest)) or self.in_use(digest)
        )
        return removed

    def _collect(self, digest: str) -> bool:
        if self.records.holders(digest) or self.in_use(digest):
            return False
        self._unnamed_since.pop(digest, None)
        deleted = self.blobs.delete(digest)
        self.collected += deleted
        return deleted
