"""Control methods for datasets (registered by daemon/control/api.py).

dataset.add    {"name", "path" (absolute, on this node), "description", "allow_images": [..],
                "allow_algorithms": [..], "allow_clients": [..], "max_output": "10MiB" | int}
               -> dataset object of this node's record, plus "warnings": [text]
dataset.remove {"name"}  -> {"name", "removed": true}
dataset.list   {}        -> [{"name", "digest", "size", "files", "description",
                              "holders": [{"node", "added_at", "allow_images", "allow_algorithms",
                                           "allow_clients", "max_output"}], "conflicts": [node hex]}]

A dataset is hashed where it lies and its record is signed by this node (the document's
`datasets` map); the data itself is never copied to the blob store nor sent anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from crdt_state.records import RecordError
from daemon.control.server import ControlError, Handler, param
from daemon.jobs.dataset_store import DatasetStore
from daemon.jobs.loop import JobLoop
from metrics_agent.units import UnitError, parse_bytes
from pack_manager.datasets import DatasetError, DatasetPolicy, DatasetRecord, check_name

from .jobs_api import _iso


def _texts(params: dict[str, Any], key: str) -> tuple[str, ...]:
    values = param(params, key, list, optional=True, default=[])
    if not all(isinstance(value, str) for value in values):
        raise ControlError(f"parameter {key!r}: a list of text")
    return tuple(values)


class DatasetsApi:
    def __init__(self, jobs: JobLoop, store: DatasetStore) -> None:
        self.jobs = jobs
        self.store = store
        self.catalog = jobs.dataset_catalog

    def methods(self) -> dict[str, Handler]:
        return {"dataset.add": self.add, "dataset.remove": self.remove, "dataset.list": self.list}

    async def add(self, params: dict[str, Any]) -> Any:
        name = param(params, "name", str)
        path = Path(param(params, "path", str))
        raw_cap = params.get("max_output") or 0
        try:
            check_name(name)
            if not isinstance(raw_cap, (str, int)) or isinstance(raw_cap, bool):
                raise DatasetError("max_output: a size like 10MiB")
            cap = parse_bytes(raw_cap, "max_output")
            policy = DatasetPolicy(
                allow_images=_texts(params, "allow_images"),
                allow_algorithms=_texts(params, "allow_algorithms"),
                allow_clients=tuple(c.lower() for c in _texts(params, "allow_clients")),
                max_output_bytes=cap,
            )
            description = param(params, "description", str, optional=True, default="")
            if len(description) > 1000:
                raise DatasetError("description: at most 1000 characters")
            manifest = await trio.to_thread.run_sync(self.store.scan, name, path)
        except (DatasetError, UnitError) as exc:
            raise ControlError(str(exc)) from None
        for holder, record in self.catalog.holders(name).items():
            if record.digest != manifest.digest and holder != self.jobs.me:
                raise ControlError(
                    f"dataset {name} is published with other content ({record.digest[:12]}) by node "
                    f"{holder.hex()[:12]}; one name stands for one content: choose another name"
                )
        record = DatasetRecord(
            name=name,
            holder=self.jobs.me,
            digest=manifest.digest,
            size=manifest.size,
            files=len(manifest.files),
            description=description,
            policy=policy,
            added_ms=self.jobs.now_ms(),
        )
        try:
            await trio.to_thread.run_sync(self.store.save, manifest)
        except (DatasetError, OSError) as exc:
            raise ControlError(f"dataset {name}: {exc}") from None
        self._publish(record)
        await self.jobs.commit_durably()
        self.jobs.log.info(
            "dataset added", dataset=name, digest=manifest.digest[:12], files=len(manifest.files)
        )
        self.jobs.wake()
        warnings = []
        if manifest.unreadable:
            warnings.append(
                f"{manifest.unreadable} files are not readable by other users; a Podman job runs as an "
                f"unprivileged user and cannot read them (chmod -R o+rX {manifest.source})"
            )
        return {**_record_object(record), "warnings": warnings}

    async def remove(self, params: dict[str, Any]) -> Any:
        name = param(params, "name", str)
        held = self.catalog.holders(name).get(self.jobs.me)
        if held is None or self.store.get(name) is None:
            raise ControlError(f"dataset {name!r:.80} is not held on this node")
        self._publish(
            DatasetRecord(
                name=held.name,
                holder=held.holder,
                digest=held.digest,
                size=held.size,
                files=held.files,
                description=held.description,
                policy=held.policy,
                added_ms=self.jobs.now_ms(),
                removed=True,
            )
        )
        self.store.remove(name)
        await self.jobs.commit_durably()
        self.jobs.log.info("dataset removed", dataset=name)
        self.jobs.wake()
        return {"name": name, "removed": True}

    def _publish(self, record: DatasetRecord) -> None:
        try:
            self.jobs.write_dataset(record.key, self.jobs.sign("dataset", record.to_wire()))
        except RecordError as exc:
            raise ControlError(f"dataset record refused: {exc}") from None

    async def list(self, params: dict[str, Any]) -> Any:
        catalog = self.catalog.catalog()
        out = []
        for name in sorted(catalog):
            holders = sorted(catalog[name].values(), key=lambda r: r.holder)
            if not holders:
                continue
            first = holders[0]
            out.append(
                {
                    **{k: v for k, v in _record_object(first).items() if k != "holder"},
                    "holders": [_holder_object(r) for r in holders],
                    "conflicts": [r.holder.hex() for r in self.catalog.conflicts if r.name == name],
                }
            )
        return out


def _holder_object(record: DatasetRecord) -> dict[str, Any]:
    return {
        "node": record.holder.hex(),
        "added_at": _iso(record.added_ms),
        "allow_images": list(record.policy.allow_images),
        "allow_algorithms": list(record.policy.allow_algorithms),
        "allow_clients": list(record.policy.allow_clients),
        "max_output": record.policy.max_output_bytes,
    }


def _record_object(record: DatasetRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "digest": record.digest,
        "size": record.size,
        "files": record.files,
        "description": record.description,
        "holder": _holder_object(record),
    }
