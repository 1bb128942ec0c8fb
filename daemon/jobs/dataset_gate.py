"""The holder's last word before a job touches its datasets, and the output cap after. Trio driver.

Placement already kept the job to nodes whose policies admit it by the replicated records
(pack_manager/datasets.py). Here the node that is about to run it checks again with what only
it can see: the image id a name stands for in its own Podman, and that the dataset's files
are still the ones it hashed. A refusal fails the job before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import trio

from daemon.jobs.dataset_store import DatasetStore
from pack_manager.datasets import DatasetError, DatasetRecord, output_cap, over_cap_reason, policy_refusal
from pack_manager.jobspec import JobSpec


@dataclass(frozen=True)
class Admission:
    mounts: dict[str, Path]  # dataset name -> directory to mount read-only
    cap: tuple[int, str] | None  # (max output bytes, dataset name), or None


class Refused(Exception):
    """The job may not run here: the message is the run's failure reason."""


async def admit(
    spec: JobSpec,
    me: bytes,
    store: DatasetStore | None,
    held: Mapping[str, Mapping[bytes, DatasetRecord]],
    image_id: Callable[[str], str | None] | None,
) -> Admission:
    """Mount points and cap for a job naming datasets, or Refused with the reason."""
    if store is None:
        raise Refused("rejected: this node keeps no datasets")
    records: dict[str, DatasetRecord] = {}
    for name in spec.datasets:
        record = held.get(name, {}).get(me)
        if record is None or store.get(name) is None:
            raise Refused(f"rejected: dataset {name} is not held on this node")
        if store.get(name).digest != record.digest:  # type: ignore[union-attr]
            raise Refused(f"rejected: dataset {name} on this node does not match its published record")
        records[name] = record
    resolved = None
    if spec.kind == "run" and spec.image and image_id is not None:
        resolved = await trio.to_thread.run_sync(image_id, spec.image)
    for record in records.values():
        why = policy_refusal(record, spec, resolved)
        if why is not None:
            raise Refused(f"refused by dataset policy: {why}")
    mounts = {}
    for name in spec.datasets:
        try:
            mounts[name] = await trio.to_thread.run_sync(store.verify, name)
        except DatasetError as exc:
            raise Refused(f"rejected: {exc}") from None
    return Admission(mounts, output_cap(spec, records))


def cap_refusal(cap: tuple[int, str] | None, outputs: Any, log_path: Path) -> str | None:
    """Why the run's outputs and log may not be published (over the dataset's cap), or None."""
    if cap is None:
        return None
    total = sum(item.size for item in outputs) + (log_path.stat().st_size if log_path.exists() else 0)
    return over_cap_reason(total, cap) if total > cap[0] else None
