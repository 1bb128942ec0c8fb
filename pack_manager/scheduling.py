"""Who runs a job, decided by each node alone on its own view. Pure: no I/O, no clock.

Every node calls `decide` for each unfinished job whenever its view changes (and every
tick) and acts only for itself. Because every input is replicated (specs, run records,
node records) and the functions are deterministic, nodes with the same view reach the
same conclusion; nodes whose views differ for a moment may both claim, and the conflict
rule (better-ranked claimant wins) settles it as soon as their views meet.

The order of candidates is the placement policy's order (pack_manager.placement), with
nodes matching more preferred labels first, and, when the job asks, nodes that hold more of
its blobs and its image (by the document) next. A candidate is a live node whose static
capabilities fit the job. Walking that order, a node is *available* when it is live and
either fits now by its last gossiped capacity, or has no decline newer than that capacity.
The first K available nodes (K = replicas) are responsible; each one claims if it fits
now by its own fresh figures, and otherwise writes a decline with its reasons, which
makes the next node responsible. A node that could not get the job's image or inputs (while a
holder of them lives) declines for good (`unable`): it is passed over from then on, and once
every capable live node is unable the first of them in order gives the job up with all their
reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity

from .datasets import Catalog, dataset_reasons, refused_everywhere
from .fit import check_capabilities, check_capacity, check_fit, preference_score
from .image_refs import find_image
from .jobspec import JobSpec
from .jobstate import (
    CANCELLED,
    DECLINED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TIMED_OUT,
    UNSCHEDULABLE,
    RunReport,
)
from .placement import DEFAULT_POLICY, rank, rank_with_preferences, ranking_id, shard_rotation

LIVE_STATUSES = ("alive", "suspect")  # a suspect node keeps its place until it is declared dead


@dataclass(frozen=True, slots=True)
class NodeView:
    """What this node knows of one node: its record's figures and locally observed liveness."""

    capabilities: NodeCapabilities
    capacity: NodeCapacity | None
    status: str  # alive | suspect | dead | left
    reported_ms: int = 0  # the node's own clock when it wrote that capacity

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: bytes
    spec: JobSpec
    runs: Mapping[bytes, RunReport]  # node id -> that node's run record
    cancelled: bool = False
    # node id -> how many of the job's blobs (context, module, inputs) the document says that
    # node holds; consulted only when the spec asks for prefer_local_inputs.
    holdings: Mapping[bytes, int] = field(default_factory=dict)
    submitted_ms: int = 0  # the submitter's clock; the queue timeout counts from it
    # The job's datasets: name -> holder -> record (pack_manager.datasets); empty without any.
    datasets: Catalog = field(default_factory=dict)


# What a node should do about a job. The daemon turns these into run records and executor calls.
@dataclass(frozen=True, slots=True)
class Claim:
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class Decline:
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Yield:
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    attempt: int
    reason: str


Action = Claim | Decline | Yield | Stop | GiveUp | None


def _short(node_id: bytes) -> str:
    return node_id.hex()[:12]


def order_nodes(job: JobView, nodes: Mapping[bytes, NodeView], policy: str = DEFAULT_POLICY) -> list[bytes]:
    """Every known node in placement order (by the job's placement key when it has one, else
    its shard group's id or its own; a shard rotated to its own start), capable or not: nodes matching more preferred
    labels first; among those, with prefer_local_inputs, nodes holding more of the job's blobs
    (so the inputs need not travel); then the policy's order. Holdings come from the
    replicated document, never from a node's own disk, so every node orders alike."""
    req = job.spec.requirements
    ranked_by = ranking_id(job.spec.shard_group or job.job_id, job.spec.placement_key)
    holdings = local_holdings(job, nodes) if job.spec.prefer_local_inputs else {}
    if not req.preferred_labels and not holdings:
        # Every score would be 0: the policy's order alone, sorted in C rather than by a Python
        # key per node (half the cost at 1000 nodes; every node ranks every job it sees).
        return _for_shard(job, nodes, rank(ranked_by, nodes.keys(), policy))
    scores = {node_id: preference_score(view.capabilities, req) for node_id, view in nodes.items()}
    if holdings:
        weight = 1 + max(holdings.values())  # a label match outweighs any number of blobs
        scores = {node_id: score * weight + holdings.get(node_id, 0) for node_id, score in scores.items()}
    return _for_shard(job, nodes, rank_with_preferences(ranked_by, scores, policy))


def never_reasons(job: JobView, node_id: bytes, view: NodeView) -> tuple[str, ...]:
    """Why the node can never run the job: its capabilities, then the job's datasets."""
    reasons = check_capabilities(view.capabilities, job.spec.requirements)
    if job.spec.datasets:
        reasons += dataset_reasons(job.spec, node_id, job.datasets)
    return reasons


def local_holdings(job: JobView, nodes: Mapping[bytes, NodeView]) -> dict[bytes, int]:
    """node -> how many of the job's blobs it holds, plus one when it publishes the job's image."""
    holdings = dict(job.holdings)
    image = job.spec.image if job.spec.kind == "run" else None
    if image:
        for node_id, view in nodes.items():
            if view.capabilities.images and find_image(image, view.capabilities.images) is not None:
                holdings[node_id] = holdings.get(node_id, 0) + 1
    return holdings


def _unable(job: JobView) -> set[bytes]:
    """Nodes that declined the job for good (they could not get its image or inputs)."""
    return {node_id for node_id, run in job.runs.items() if run.state == DECLINED and run.unable}


def _give_up_unable(
    job: JobView, nodes: Mapping[bytes, NodeView], self_id: bytes, order: Sequence[bytes], unable: set[bytes]
) -> Action:
    """GiveUp from the first capable live node when every capable live node is unable."""
    req = job.spec.requirements
    capable = [
        node_id
        for node_id in order
        if nodes[node_id].live and not check_capabilities(nodes[node_id].capabilities, req)
    ]
    if not capable or any(node_id not in unable for node_id in capable) or capable[0] != self_id:
        return None
    reasons = " | ".join(f"node {_short(n)}: {job.runs[n].reason}" for n in capable)
    return GiveUp(job.runs[self_id].attempt, f"no node could get the job's image or inputs: {reasons}")


def _for_shard(job: JobView, nodes: Mapping[bytes, NodeView], order: list[bytes]) -> list[bytes]:
    """Shard i of a sharded job starts at the i-th capable node of the group's order and goes
    round it from there (pack_manager.placement.shard_rotation); other jobs keep the order."""
    if not job.spec.shard_count:
        return order
    capable = [n for n in order if not never_reasons(job, n, nodes[n])]
    return shard_rotation(order, capable, job.spec.shard_index)


def _holders(job: JobView, nodes: Mapping[bytes, NodeView], retrying: set[bytes] = frozenset()) -> set[bytes]:
    """Nodes that hold a replica slot: a live claim, or a finished attempt that is not being
    retried elsewhere."""
    held = set()
    for node_id, run in job.runs.items():
        view = nodes.get(node_id)
        if (run.final and node_id not in retrying) or (run.active and view is not None and view.live):
            held.add(node_id)
    return held


def _ran_and_failed(run: RunReport) -> bool:
    """A run that started and then failed or timed out: what retries retry. Give-ups (the
    nodes running it died, the queue timeout) never started a run of their own."""
    return run.state in (FAILED, TIMED_OUT) and (run.started_ms > 0 or run.exit_code is not None)


def _retrying(job: JobView, nodes: Mapping[bytes, NodeView]) -> set[bytes]:
    """Nodes whose failed run is retried elsewhere: they hold no slot and are not asked again.
    Empty when the job has no retries left, or no live capable node has not tried it yet."""
    if not job.spec.retries:
        return set()
    failed = {n for n, run in job.runs.items() if _ran_and_failed(run)}
    if not failed or len(failed) > job.spec.retries:
        return set()
    untried = any(
        view.live and node_id not in failed and not never_reasons(job, node_id, view)
        for node_id, view in nodes.items()
    )
    return failed if untried else set()


def settled(spec: JobSpec, runs: Mapping[bytes, RunReport]) -> bool:
    """Enough runs have ended that no node needs to act on the job again (failures that
    retries will retry do not count). Liveness aside: a cheap test for the job loop."""
    finals = [run for run in runs.values() if run.final]
    failed = [run for run in finals if _ran_and_failed(run)]
    if failed and len(failed) <= spec.retries:
        finals = [run for run in finals if not _ran_and_failed(run)]
    return len(finals) >= spec.replicas


def _next_attempt(
    job: JobView, nodes: Mapping[bytes, NodeView], retrying: set[bytes] = frozenset()
) -> tuple[int, list[bytes]]:
    """1 + the highest attempt of claims abandoned by nodes that died or left, and of failed
    runs being retried."""
    abandoned = [
        node_id
        for node_id, run in job.runs.items()
        if run.active and (node_id not in nodes or not nodes[node_id].live)
    ]
    highest = max((job.runs[n].attempt for n in [*abandoned, *retrying]), default=0)
    return highest + 1, abandoned


def retry_due_ms(job: JobView, retrying: set[bytes]) -> int:
    """When the next retry may start: retry_delay doubling with each failure, counted from
    the latest failure's end (by the clock of the node that failed)."""
    if not retrying:
        return 0
    last = max(job.runs[n].finished_ms for n in retrying)
    return last + job.spec.retry_delay_ms * 2 ** (len(retrying) - 1)


def _queue_timed_out(job: JobView, now_ms: int | None) -> bool:
    """No run has started within the job's queue timeout (declines do not count)."""
    limit = job.spec.queue_timeout_ms
    if limit is None or now_ms is None or now_ms - job.submitted_ms < limit:
        return False
    return all(run.state == DECLINED for run in job.runs.values())


def _available(node_id: bytes, job: JobView, view: NodeView) -> bool:
    if not view.live:
        return False
    run = job.runs.get(node_id)
    if run is not None and run.state == DECLINED and run.updated_ms >= view.reported_ms:
        return False  # it said no after its last capacity report: believe it
    if view.capacity is None:
        return True  # not reported yet: give it the benefit of the doubt, it will decline if it must
    return not check_capacity(view.capabilities, view.capacity, job.spec.requirements)


def decide(
    job: JobView,
    nodes: Mapping[bytes, NodeView],
    self_id: bytes,
    own_capacity: NodeCapacity | None,
    *,
    policy: str = DEFAULT_POLICY,
    max_attempts: int = 3,
    order: Sequence[bytes] | None = None,
    now_ms: int | None = None,
) -> Action:
    """What `self_id` should do about `job` now. `own_capacity` is this node's fresh figures,
    reservations of the jobs it just claimed included (fresher than its gossiped record).
    `order`: order_nodes(job, nodes, policy) if the caller kept it (it is the costly part).
    `now_ms`: this node's wall clock, for retry delays and the queue timeout (None: neither
    applies)."""
    own = job.runs.get(self_id)
    if job.cancelled:
        return Stop("cancelled by request") if own is not None and own.active else None
    me = nodes.get(self_id)
    if me is None:
        return None
    if order is None:
        order = order_nodes(job, nodes, policy)
    if _queue_timed_out(job, now_ms):
        # The first live node in placement order (capable or not: an unschedulable job has
        # no capable node) writes the failure; the others wait for its record.
        first = next((n for n in order if nodes[n].live), None)
        if first == self_id and (own is None or own.state == DECLINED):
            return GiveUp(1, f"queue timeout: no run started within {job.spec.queue_timeout_ms / 1000:g} s")
        return None
    position = {node_id: i for i, node_id in enumerate(order)}
    retrying = _retrying(job, nodes)
    holders = _holders(job, nodes, retrying)
    replicas = job.spec.replicas

    if own is not None and own.active:
        better = sorted(
            (n for n in holders if n != self_id and position[n] < position[self_id]), key=position.get
        )
        if len(better) >= replicas:
            winner = better[0]
            return Yield(
                f"node {_short(winner)} ranks higher for this job and holds it ({job.runs[winner].state})"
            )
        return None
    if own is not None and own.final:
        return None

    free_slots = replicas - len(holders)
    if free_slots <= 0:
        return None
    unable = _unable(job)
    if self_id in unable:
        return _give_up_unable(job, nodes, self_id, order, unable)
    req = job.spec.requirements
    if job.spec.datasets and not holders:
        refused = refused_everywhere(job.spec, job.datasets, [n for n in order if nodes[n].live])
        if refused is not None:
            return GiveUp(own.attempt if own else 1, refused[1]) if refused[0] == self_id else None
    for node_id in order:
        if node_id in holders or node_id in retrying or node_id in unable:
            continue
        view = nodes[node_id]
        if not view.live or never_reasons(job, node_id, view):
            continue
        if node_id == self_id:
            attempt, abandoned = _next_attempt(job, nodes, retrying)
            if now_ms is not None and now_ms < retry_due_ms(job, retrying):
                return None  # our turn to retry, once the delay has passed
            if attempt > max_attempts + job.spec.retries:
                gone = ", ".join(_short(n) for n in abandoned)
                return GiveUp(
                    attempt - 1, f"gave up after {attempt - 1} attempts: the nodes running it died ({gone})"
                )
            verdict = check_fit(me.capabilities, own_capacity, req)
            if not verdict.fits_now:
                if own is not None and own.state == DECLINED and own.reason == "; ".join(verdict.not_now):
                    return None  # already said so; do not rewrite the same decline every tick
                return Decline(verdict.not_now)
            why = f"ranked {position[self_id] + 1} of {len(order)} known nodes"
            if retrying:
                why += f"; retry {len(retrying)} of {job.spec.retries}"
            if abandoned:
                why += f"; taking over from {', '.join(_short(n) for n in abandoned)} (dead)"
            return Claim(attempt, why)
        if _available(node_id, job, view):
            free_slots -= 1
            if free_slots == 0:
                return None
    return None


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    node: bytes
    state: str
    digest: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    node: bytes
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: str
    reason: str
    node: bytes | None = None
    attempt: int = 0
    run: RunReport | None = None
    replicas: tuple[ReplicaStatus, ...] = ()
    verified: bool = False
    reasons: tuple[str, ...] = field(default=())  # per-node reasons when unschedulable
    attempts: tuple[Attempt, ...] = ()  # every run that got past a decline, by attempt
    verify_reason: str = ""  # why a replicated job is not verified


def _more_can_run(
    job: JobView, nodes: Mapping[bytes, NodeView], holders: set[bytes] | list[bytes], retrying: set[bytes]
) -> bool:
    """Some live capable node holds no replica yet and may still run one."""
    return any(
        view.live
        and node_id not in holders
        and node_id not in retrying
        and not never_reasons(job, node_id, view)
        for node_id, view in nodes.items()
    )


def _verify_reason(job: JobView, chosen: list[bytes], needed: int) -> str:
    runs = [(node_id, job.runs[node_id]) for node_id in chosen]
    if len(chosen) < needed:
        return f"only {len(chosen)} of {needed} replicas ran (no other capable node is live)"
    failed = [f"{_short(n)} {run.state}" for n, run in runs if run.state != SUCCEEDED]
    if failed:
        return "replicas did not all succeed: " + ", ".join(failed)
    return "replicas differ: " + ", ".join(
        f"node {_short(n)} digest {(run.result_digest or '-')[:12]}" for n, run in runs
    )


def job_status(
    job: JobView,
    nodes: Mapping[bytes, NodeView],
    policy: str = DEFAULT_POLICY,
    order: Sequence[bytes] | None = None,
) -> JobStatus:
    """The job's state as a user sees it, derived from every node's run record (`order` as
    for decide)."""
    if order is None:
        order = order_nodes(job, nodes, policy) if nodes else []
    position = {node_id: i for i, node_id in enumerate(order)}
    far = len(order)

    def by_rank(node_id: bytes) -> tuple[int, bytes]:
        return (position.get(node_id, far), node_id)

    retrying = _retrying(job, nodes)
    holders = sorted(_holders(job, nodes, retrying), key=by_rank)
    replicas = tuple(ReplicaStatus(n, job.runs[n].state, job.runs[n].result_digest) for n in holders)
    finished = [n for n in holders if job.runs[n].final]
    if job.spec.retries:
        finished.sort(key=lambda n: -job.runs[n].attempt)  # the last attempt speaks for the job
    needed = job.spec.replicas
    attempts = tuple(
        Attempt(run.attempt, node_id, run.state, run.reason)
        for node_id, run in sorted(job.runs.items(), key=lambda item: (item[1].attempt, by_rank(item[0])))
        if run.state != DECLINED
    )

    # A replicated job is final only when every replica is: when enough runs have ended, or
    # none runs and no live capable node is left to run one (or the job was cancelled).
    idle = not any(job.runs[n].active for n in holders)
    if finished and (
        len(finished) >= needed
        or (idle and (job.cancelled or not _more_can_run(job, nodes, holders, retrying)))
    ):
        chosen = finished[:needed]
        states = {job.runs[n].state for n in chosen}
        # One failure spoils a replicated result; otherwise the best-ranked replica speaks.
        worst = next((n for n in chosen if job.runs[n].state != SUCCEEDED), chosen[0])
        run = job.runs[worst]
        digests = {job.runs[n].result_digest for n in chosen}
        verified = (
            needed > 1
            and len(chosen) >= needed
            and states == {SUCCEEDED}
            and len(digests) == 1
            and None not in digests
        )
        return JobStatus(
            run.state,
            run.reason,
            worst,
            run.attempt,
            run,
            replicas,
            verified,
            attempts=attempts,
            verify_reason=_verify_reason(job, chosen, needed) if needed > 1 and not verified else "",
        )

    active = [n for n in holders if job.runs[n].active]
    if job.cancelled:
        if active:
            run = job.runs[active[0]]
            return JobStatus(
                run.state,
                "cancel requested; waiting for the runner to stop",
                active[0],
                run.attempt,
                run,
                replicas,
                attempts=attempts,
            )
        return JobStatus(
            CANCELLED, "cancelled before any node ran it", None, 0, None, replicas, attempts=attempts
        )
    if active:
        lead = next((n for n in active if job.runs[n].state == RUNNING), active[0])
        run = job.runs[lead]
        return JobStatus(run.state, run.reason, lead, run.attempt, run, replicas, attempts=attempts)

    never: list[str] = []
    candidates = []
    for node_id in order:
        view = nodes[node_id]
        reasons = never_reasons(job, node_id, view)
        if not view.live:
            continue
        if reasons:
            never.append(f"node {_short(node_id)}: " + "; ".join(reasons))
        elif node_id not in retrying:
            candidates.append(node_id)
    if not candidates:
        why = "no live node can ever run it" + (": " + " | ".join(never) if never else " (no live nodes)")
        return JobStatus(UNSCHEDULABLE, why, reasons=tuple(never))
    declined = [n for n in candidates if job.runs.get(n) is not None and job.runs[n].state == DECLINED]
    waiting = next((n for n in candidates if n not in declined), None)
    if declined and waiting is None:
        first = declined[0]
        why = f"waiting for capacity: every capable node declined (first: {_short(first)}: {job.runs[first].reason})"
    elif declined:
        why = f"waiting for node {_short(waiting)}; declined: " + ", ".join(
            f"{_short(n)} ({job.runs[n].reason})" for n in declined[:3]
        )
    else:
        why = f"waiting for node {_short(candidates[0])} to claim it"
    if retrying:
        last = max(retrying, key=lambda n: job.runs[n].attempt)
        why = (
            f"retry {len(retrying)} of {job.spec.retries} after attempt {job.runs[last].attempt} "
            f"{job.runs[last].state} on {_short(last)} ({job.runs[last].reason}); {why}"
        )
    return JobStatus(QUEUED, why, None, 0, None, replicas, attempts=attempts)
