"""Does a job fit a node? Pure: a verdict from capabilities, capacity and requirements.

The verdict keeps two lists apart, because they lead to different actions:
- `never`: the node's static capabilities can not satisfy the job (wrong executor, too
  little memory in total, no such GPU). It is not a candidate at all; if no live node is
  a candidate the job is unschedulable.
- `not_now`: it could, but its free capacity cannot take the job at the moment (other
  jobs hold reservations). A top-ranked node in this state declines, and the next takes over.
Each failed resource gives one human reason, e.g.
`memory: needs 4.0 GiB, 1.5 GiB available of 8.0 GiB`.
"""

from __future__ import annotations

from dataclasses import dataclass

from metrics_agent.capabilities import GpuInfo, NodeCapabilities
from metrics_agent.capacity import NodeCapacity
from metrics_agent.named_capabilities import matching as named_matching
from metrics_agent.units import format_bytes, format_cpu

from .requirements import WorkloadRequirements
from .selectors import selector_failures


@dataclass(frozen=True, slots=True)
class FitVerdict:
    never: tuple[str, ...] = ()
    not_now: tuple[str, ...] = ()

    @property
    def fits_ever(self) -> bool:
        return not self.never

    @property
    def fits_now(self) -> bool:
        return not self.never and not self.not_now

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.never + self.not_now


def _gpu_matches(gpu: GpuInfo, req: WorkloadRequirements) -> bool:
    if not gpu.cdi_device:  # reported, but no CDI device brings it into a container
        return False
    if req.gpu_model and req.gpu_model.casefold() not in gpu.model.casefold():
        return False
    return gpu.memory_bytes >= req.gpu_memory_bytes


def _describe_gpu_need(req: WorkloadRequirements) -> str:
    parts = [f"{req.gpu_count} GPU" + ("s" if req.gpu_count != 1 else "")]
    if req.gpu_model:
        parts.append(f"model ~{req.gpu_model!r}")
    if req.gpu_memory_bytes:
        parts.append(f"≥ {format_bytes(req.gpu_memory_bytes)} each")
    return " ".join(parts)


def check_capabilities(caps: NodeCapabilities, req: WorkloadRequirements) -> tuple[str, ...]:
    """Reasons the node can never run the job (empty: it is a candidate)."""
    reasons = []
    if req.executor not in caps.executors:
        offered = ", ".join(caps.executors) or "none"
        reasons.append(f"executor: needs {req.executor}, node offers {offered}")
    for key, wanted in sorted(req.labels.items()):
        have = caps.labels.get(key)
        if have != wanted:
            reasons.append(
                f"label {key}: needs {wanted!r}, node has {have!r}"
                if have is not None
                else f"label {key}: needs {wanted!r}, node has no such label"
            )
    reasons.extend(selector_failures(req.selectors, caps.labels))
    if req.region is not None and caps.region != req.region:
        reasons.append(
            f"region: needs {req.region!r}, node is in {caps.region!r}"
            if caps.region
            else f"region: needs {req.region!r}, node names no region"
        )
    for pattern in req.capabilities:
        if not named_matching(pattern, caps.named):
            offered = ", ".join(sorted(caps.named)) or "none"
            reasons.append(f"capability {pattern}: node does not offer it (offers {offered})")
    if req.cpu_millicores > caps.cpu_millicores:
        reasons.append(
            f"cpu: needs {format_cpu(req.cpu_millicores)}, node has {format_cpu(caps.cpu_millicores)}"
        )
    if req.memory_bytes > caps.memory_bytes:
        reasons.append(
            f"memory: needs {format_bytes(req.memory_bytes)}, node has {format_bytes(caps.memory_bytes)}"
        )
    if req.disk_bytes > caps.disk_bytes:
        reasons.append(
            f"disk: needs {format_bytes(req.disk_bytes)}, node has {format_bytes(caps.disk_bytes)}"
        )
    if req.gpu_count:
        matching = [g for g in caps.gpus if _gpu_matches(g, req)]
        if len(matching) < req.gpu_count:
            have = ", ".join(f"{g.model} {format_bytes(g.memory_bytes)}" for g in caps.gpus) or "no GPUs"
            hidden = sum(not g.cdi_device for g in caps.gpus)
            unoffered = f"; {hidden} not offered to jobs (no CDI spec for them)" if hidden else ""
            reasons.append(
                f"gpu: needs {_describe_gpu_need(req)}, node has {len(matching)} matching ({have}{unoffered})"
            )
    return tuple(reasons)


def check_capacity(caps: NodeCapabilities, cap: NodeCapacity, req: WorkloadRequirements) -> tuple[str, ...]:
    """Reasons the node cannot take the job right now, given what its running jobs hold."""
    reasons = []
    if req.cpu_millicores > cap.allocatable_cpu_millicores:
        reasons.append(
            f"cpu: needs {format_cpu(req.cpu_millicores)}, {format_cpu(cap.allocatable_cpu_millicores)} "
            f"available of {format_cpu(caps.cpu_millicores)}"
        )
    if req.memory_bytes > cap.allocatable_memory_bytes:
        reasons.append(
            f"memory: needs {format_bytes(req.memory_bytes)}, {format_bytes(cap.allocatable_memory_bytes)} "
            f"available of {format_bytes(caps.memory_bytes)}"
        )
    if req.disk_bytes > cap.allocatable_disk_bytes:
        reasons.append(
            f"disk: needs {format_bytes(req.disk_bytes)}, {format_bytes(cap.allocatable_disk_bytes)} "
            f"available of {format_bytes(caps.disk_bytes)}"
        )
    if req.gpu_count:
        free = free_matching_gpus(caps, cap, req)
        if len(free) < req.gpu_count:
            reasons.append(f"gpu: needs {_describe_gpu_need(req)}, {len(free)} free now of {len(caps.gpus)}")
    for pattern in _take_slots(caps, cap, req)[1]:
        names = named_matching(pattern, caps.named)
        used = sum(cap.capabilities_in_use.get(n, 0) for n in names)
        reasons.append(f"capability {pattern}: {used} of {sum(caps.named[n] for n in names)} in use")
    return tuple(reasons)


def capability_slots(caps: NodeCapabilities, cap: NodeCapacity, req: WorkloadRequirements) -> tuple[str, ...]:
    """The named capability whose slot each of the job's patterns takes (for its reservation)."""
    return _take_slots(caps, cap, req)[0]


def _take_slots(
    caps: NodeCapabilities, cap: NodeCapacity, req: WorkloadRequirements
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names whose slot the patterns take, patterns whose slots are all in use). Each pattern
    takes the first matching name (sorted, so every node picks alike) with a slot free after
    the patterns before it; a pattern the node does not offer at all takes nothing and is
    not listed (that is a `never` reason, see check_capabilities)."""
    taken: dict[str, int] = dict(cap.capabilities_in_use)
    chosen, full = [], []
    for pattern in req.capabilities:
        names = named_matching(pattern, caps.named)
        slot = next((n for n in names if taken.get(n, 0) < caps.named[n]), None)
        if slot is not None:
            taken[slot] = taken.get(slot, 0) + 1
            chosen.append(slot)
        elif names:
            full.append(pattern)
    return tuple(chosen), tuple(full)


def free_matching_gpus(
    caps: NodeCapabilities, cap: NodeCapacity, req: WorkloadRequirements
) -> tuple[int, ...]:
    """Indices of GPUs that match the job, are not reserved, answered NVML and have the memory free."""
    free_memory = {usage.index: usage.memory_free_bytes for usage in cap.gpus}
    allocatable = set(cap.allocatable_gpu_indices)
    return tuple(
        g.index
        for g in caps.gpus
        if _gpu_matches(g, req)
        and g.index in allocatable
        and free_memory.get(g.index, 0) >= req.gpu_memory_bytes
    )


def check_fit(caps: NodeCapabilities, cap: NodeCapacity | None, req: WorkloadRequirements) -> FitVerdict:
    never = check_capabilities(caps, req)
    if never:
        return FitVerdict(never=never)
    if cap is None:
        return FitVerdict(not_now=("capacity: not reported yet",))
    return FitVerdict(not_now=check_capacity(caps, cap, req))


def preference_score(caps: NodeCapabilities, req: WorkloadRequirements) -> int:
    """How many preferred labels the node matches (ranks earlier; never excludes)."""
    return sum(1 for key, value in req.preferred_labels.items() if caps.labels.get(key) == value)
