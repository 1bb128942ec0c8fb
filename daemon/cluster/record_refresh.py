"""When a node rewrites its own record (pure).

Every write of the ~0.8 KiB signed record is pushed to the whole cluster, each node sending it
retransmit_limit(1, n) = ceil(log10(n + 1)) times, so per node the cost is
  (n / refresh interval) writes/s x 842 B x ceil(log10(n + 1)).
A record that changed in shape (labels, address, status, incarnation, capabilities) and a
refutation go out at once; otherwise the record is refreshed every refresh_interval(n)
(daemon/cluster/membership.py: heartbeat interval x max(1, n / refresh_rate)), which keeps the
cluster-wide write rate at refresh_rate per heartbeat interval: with refresh_rate 3 that is
3 x 842 B x 4 = 10.1 KB/s = 81 kbit/s per node at 1000 nodes, 61 kbit/s at 200.

Capacity is sampled every tick but a capacity change alone is written early only when this
node's reservations changed (a job of ours started or ended: running_jobs, reserved figures,
allocatable GPUs), and not sooner than `min_gap` after the previous write. Idle CPU and free
memory move all the time and are not worth a cluster-wide write: remote capacity only decides
whether a better-ranked node is skipped before it declines (pack_manager/scheduling.py), the
node that runs a job checks its own fresh figures, and a node that declined becomes available
again to the others at its next write (the decline is older than that capacity report).
"""

from __future__ import annotations

from typing import Any, Mapping

RESERVATION_FIELDS = (
    "running_jobs",
    "reserved_cpu_millicores",
    "reserved_memory_bytes",
    "reserved_disk_bytes",
    "reserved_gpu_indices",
    "allocatable_gpu_indices",
)


def reservations_changed(written: Mapping[str, Any] | None, sampled: Mapping[str, Any]) -> bool:
    if written is None:
        return True
    return any(written.get(name) != sampled.get(name) for name in RESERVATION_FIELDS)


def record_due(
    now: float, last_write: float, refresh_interval: float, capacity_changed: bool, min_gap: float
) -> bool:
    """Whether the periodic write is due (nothing about the node's shape changed)."""
    since = now - last_write
    return since >= refresh_interval or (capacity_changed and since >= min_gap)
