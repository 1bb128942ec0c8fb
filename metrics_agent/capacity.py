"""What a node has free right now: sampled every tick and gossiped in its record.

Two sets of figures: what the host reports (idle CPU share, available memory, free disk)
and what placement may still hand out after the reservations of the jobs this node runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .capabilities import NodeCapabilities
from .named_capabilities import MAX_NAME, MAX_NAMED
from .wire import WireError, need_int, need_list, need_map


@dataclass(frozen=True, slots=True)
class GpuUsage:
    index: int
    memory_free_bytes: int
    utilization_pct: int  # 0..100, integer as NVML reports it

    def to_wire(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "memory_free_bytes": self.memory_free_bytes,
            "utilization_pct": self.utilization_pct,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "GpuUsage":
        record = need_map(raw, "gpu usage")
        return cls(
            index=need_int(record, "index", high=1023),
            memory_free_bytes=need_int(record, "memory_free_bytes"),
            utilization_pct=need_int(record, "utilization_pct", high=100),
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """The requirements of one job this node has claimed, held until the job ends."""

    cpu_millicores: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    gpu_indices: tuple[int, ...] = ()
    capabilities: tuple[str, ...] = ()  # one slot of each named capability (see fit.capability_slots)


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    # As the host reports them.
    cpu_millicores_idle: int
    memory_available_bytes: int
    disk_free_bytes: int
    gpus: tuple[GpuUsage, ...] = ()
    load_avg_milli: tuple[int, int, int] = (0, 0, 0)  # 1/5/15 min load x1000
    running_jobs: int = 0
    # Held by running jobs, and what placement may still hand out.
    reserved_cpu_millicores: int = 0
    reserved_memory_bytes: int = 0
    reserved_disk_bytes: int = 0
    reserved_gpu_indices: tuple[int, ...] = ()
    allocatable_cpu_millicores: int = 0
    allocatable_memory_bytes: int = 0
    allocatable_disk_bytes: int = 0
    allocatable_gpu_indices: tuple[int, ...] = field(default=())
    # Slots of named capabilities held by running jobs: name -> how many (absent: none).
    capabilities_in_use: Mapping[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "cpu_millicores_idle": self.cpu_millicores_idle,
            "memory_available_bytes": self.memory_available_bytes,
            "disk_free_bytes": self.disk_free_bytes,
            "gpus": [gpu.to_wire() for gpu in self.gpus],
            "load_avg_milli": list(self.load_avg_milli),
            "running_jobs": self.running_jobs,
            "reserved_cpu_millicores": self.reserved_cpu_millicores,
            "reserved_memory_bytes": self.reserved_memory_bytes,
            "reserved_disk_bytes": self.reserved_disk_bytes,
            "reserved_gpu_indices": list(self.reserved_gpu_indices),
            "allocatable_cpu_millicores": self.allocatable_cpu_millicores,
            "allocatable_memory_bytes": self.allocatable_memory_bytes,
            "allocatable_disk_bytes": self.allocatable_disk_bytes,
            "allocatable_gpu_indices": list(self.allocatable_gpu_indices),
            **({"capabilities_in_use": dict(self.capabilities_in_use)} if self.capabilities_in_use else {}),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "NodeCapacity":
        record = need_map(raw, "capacity")
        load = need_list(record, "load_avg_milli", limit=3)
        if len(load) != 3 or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**40 for x in load
        ):
            raise WireError("load_avg_milli: expected three non-negative integers")
        return cls(
            cpu_millicores_idle=need_int(record, "cpu_millicores_idle"),
            memory_available_bytes=need_int(record, "memory_available_bytes"),
            disk_free_bytes=need_int(record, "disk_free_bytes"),
            gpus=tuple(GpuUsage.from_wire(g) for g in need_list(record, "gpus", limit=64)),
            load_avg_milli=(load[0], load[1], load[2]),
            running_jobs=need_int(record, "running_jobs", high=1_000_000),
            reserved_cpu_millicores=need_int(record, "reserved_cpu_millicores"),
            reserved_memory_bytes=need_int(record, "reserved_memory_bytes"),
            reserved_disk_bytes=need_int(record, "reserved_disk_bytes"),
            reserved_gpu_indices=_indices(record, "reserved_gpu_indices"),
            allocatable_cpu_millicores=need_int(record, "allocatable_cpu_millicores"),
            allocatable_memory_bytes=need_int(record, "allocatable_memory_bytes"),
            allocatable_disk_bytes=need_int(record, "allocatable_disk_bytes"),
            allocatable_gpu_indices=_indices(record, "allocatable_gpu_indices"),
            capabilities_in_use=_in_use(record),
        )


def _in_use(record: Mapping[str, Any]) -> dict[str, int]:
    if "capabilities_in_use" not in record:
        return {}
    raw = need_map(record.get("capabilities_in_use"), "capabilities_in_use")
    if len(raw) > MAX_NAMED or not all(
        isinstance(k, str)
        and len(k) <= MAX_NAME
        and isinstance(v, int)
        and not isinstance(v, bool)
        and 0 < v < 2**31
        for k, v in raw.items()
    ):
        raise WireError("capabilities_in_use: expected capability names with slot counts")
    return dict(sorted(raw.items()))


def _indices(record: dict, key: str) -> tuple[int, ...]:
    values = need_list(record, key, limit=64)
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1024 for x in values):
        raise WireError(f"{key}: expected GPU indices")
    return tuple(values)


def apply_reservations(
    capabilities: NodeCapabilities,
    observed: NodeCapacity,
    reservations: Iterable[Reservation],
) -> NodeCapacity:
    """Fill in the reserved and allocatable figures from the jobs this node runs.

    CPU is compressible, so what may be handed out is the total less reservations, not the
    idle share of the moment (which swings with every burst and would make placement
    flap). Memory and disk are not: a job may hand out no more than is both unreserved and
    actually free, so a reservation and the job's real use are not counted twice.
    """
    held = list(reservations)
    cpu = sum(r.cpu_millicores for r in held)
    memory = sum(r.memory_bytes for r in held)
    disk = sum(r.disk_bytes for r in held)
    gpu_held = tuple(sorted({i for r in held for i in r.gpu_indices}))
    in_use: dict[str, int] = {}
    for name in (name for r in held for name in r.capabilities):
        in_use[name] = in_use.get(name, 0) + 1
    return NodeCapacity(
        cpu_millicores_idle=observed.cpu_millicores_idle,
        memory_available_bytes=observed.memory_available_bytes,
        disk_free_bytes=observed.disk_free_bytes,
        gpus=observed.gpus,
        load_avg_milli=observed.load_avg_milli,
        running_jobs=len(held),
        reserved_cpu_millicores=cpu,
        reserved_memory_bytes=memory,
        reserved_disk_bytes=disk,
        reserved_gpu_indices=gpu_held,
        allocatable_cpu_millicores=max(0, capabilities.cpu_millicores - cpu),
        allocatable_memory_bytes=max(
            0, min(observed.memory_available_bytes, capabilities.memory_bytes - memory)
        ),
        allocatable_disk_bytes=max(0, min(observed.disk_free_bytes, capabilities.disk_bytes - disk)),
        # Only GPUs that answered this sample are handed out (see metrics_agent.gpu).
        allocatable_gpu_indices=tuple(g.index for g in observed.gpus if g.index not in gpu_held),
        capabilities_in_use=dict(sorted(in_use.items())),
    )
