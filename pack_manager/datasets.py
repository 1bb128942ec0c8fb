"""Compute-to-data: dataset records, their owners' policies, and which nodes a job may use. Pure.

A dataset is a file or directory that stays on the node holding it. That node signs a record
of it (the document's `datasets` map, key f"{name}:{holder hex}"); a job that names datasets
can run only on a node that holds every one of them and whose policy for each admits the job.
Everything here is a function of replicated records and the job spec, so every node reaches
the same placement verdict; the holder checks once more at run time, with what only it can
see (the image id behind a name, the files on its disk).

Policy (each list empty = anyone):
    allow_images      image names (matched after normalising the tag and default registry)
                      or image ids (12+ hex, a prefix of the id)
    allow_algorithms  blake3 digests of the job's algorithm: its module blob, else its context
    allow_clients     client public keys (hex) of jobs submitted through the HTTPS API; the
                      submitting node's id for jobs submitted on a node's own socket
    max_output        bytes a job may bring back (outputs and log together); 0 = no cap
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from metrics_agent.units import format_bytes
from metrics_agent.wire import WireError, need_int, need_list, need_map, need_str

from .jobspec import DATASET_NAME, JobSpec, is_digest

DATASET_MOUNT = "/data/datasets"
_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{12,64}")
_NODE_HEX = re.compile(r"[0-9a-f]{64}")
MAX_POLICY_ITEMS = 64
MAX_DESCRIPTION = 1000


class DatasetError(ValueError):
    """A dataset name, record or policy that cannot be accepted; the message says why."""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise DatasetError(
            f"dataset name {name!r:.80}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def normalise_image(reference: str) -> str:
    """`alpine`, `alpine:latest`, `docker.io/library/alpine` and `localhost/alpine` are one name."""
    ref = reference.strip().lower()
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    last = ref.rsplit("/", 1)[-1]
    if "@" not in last and ":" not in last:
        ref += ":latest"
    return ref


def _is_image_id(text: str) -> bool:
    return bool(_IMAGE_ID.fullmatch(text.lower()))


def _bare_id(text: str) -> str:
    return text.lower().removeprefix("sha256:")


@dataclass(frozen=True, slots=True)
class DatasetPolicy:
    allow_images: tuple[str, ...] = ()
    allow_algorithms: tuple[str, ...] = ()
    allow_clients: tuple[str, ...] = ()
    max_output_bytes: int = 0

    def __post_init__(self) -> None:
        for what, items in (
            ("allow_images", self.allow_images),
            ("allow_algorithms", self.allow_algorithms),
            ("allow_clients", self.allow_clients),
        ):
            if len(items) > MAX_POLICY_ITEMS:
                raise DatasetError(f"{what}: at most {MAX_POLICY_ITEMS} entries")
            if any(not isinstance(item, str) or not item or len(item) > 255 for item in items):
                raise DatasetError(f"{what}: entries are non-empty text of at most 255 characters")
        for digest in self.allow_algorithms:
            if not is_digest(digest):
                raise DatasetError(f"allow_algorithms: {digest!r:.80} is not a blake3 hex digest")
        for client in self.allow_clients:
            if not _NODE_HEX.fullmatch(client):
                raise DatasetError(f"allow_clients: {client!r:.80} is not a node id (64 hex)")
        if not isinstance(self.max_output_bytes, int) or self.max_output_bytes < 0:
            raise DatasetError("max_output: expected a size >= 0")


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    name: str
    holder: bytes
    digest: str  # blake3 of the manifest (see daemon/jobs/dataset_store.py)
    size: int
    files: int
    description: str = ""
    policy: DatasetPolicy = field(default_factory=DatasetPolicy)
    added_ms: int = 0
    removed: bool = False  # the holder no longer offers it (records are never deleted)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.holder.hex()}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holder": self.holder,
            "digest": self.digest,
            "size": self.size,
            "files": self.files,
            "description": self.description,
            "allow_images": list(self.policy.allow_images),
            "allow_algorithms": list(self.policy.allow_algorithms),
            "allow_clients": list(self.policy.allow_clients),
            "max_output": self.policy.max_output_bytes,
            "added_ms": self.added_ms,
            "removed": self.removed,
        }

    @classmethod
    def from_wire(cls, raw: Any, key: str | None = None) -> "DatasetRecord":
        try:
            body = need_map(raw, "dataset record")
            holder = body.get("holder")
            if not isinstance(holder, bytes) or len(holder) != 32:
                raise WireError("holder: expected a 32-byte node id")
            removed = body.get("removed")
            if not isinstance(removed, bool):
                raise WireError("removed: expected true or false")
            lists = {}
            for what in ("allow_images", "allow_algorithms", "allow_clients"):
                items = need_list(body, what, limit=MAX_POLICY_ITEMS)
                if not all(isinstance(item, str) for item in items):
                    raise WireError(f"{what}: expected text entries")
                lists[what] = tuple(items)
            record = cls(
                name=check_name(need_str(body, "name", limit=64)),
                holder=holder,
                digest=need_str(body, "digest", limit=64) or "",
                size=need_int(body, "size"),
                files=need_int(body, "files"),
                description=need_str(body, "description", limit=MAX_DESCRIPTION) or "",
                policy=DatasetPolicy(
                    max_output_bytes=need_int(body, "max_output"),
                    **lists,  # type: ignore[arg-type]
                ),
                added_ms=need_int(body, "added_ms"),
                removed=removed,
            )
        except WireError as exc:
            raise DatasetError(f"dataset record: {exc}") from None
        if not is_digest(record.digest):
            raise DatasetError("dataset record: digest is not a blake3 hex digest")
        if key is not None and key != record.key:
            raise DatasetError(f"dataset record: stored under {key[:80]!r}, not {record.key[:80]!r}")
        return record


# name -> holder node id -> its record (removed ones left out): what placement reads.
Catalog = Mapping[str, Mapping[bytes, DatasetRecord]]


def client_of(spec: JobSpec) -> str:
    """Who asks: the client key that submitted the job through the HTTPS API, else the node."""
    return spec.client if spec.client is not None else spec.submitter.hex()


def algorithm_digest(spec: JobSpec) -> str | None:
    """What identifies the job's algorithm: its module blob, else its context."""
    if spec.module is not None and is_digest(spec.module):
        return spec.module
    return spec.context


def image_refusal(policy: DatasetPolicy, image: str | None, image_id: str | None) -> str | None:
    """Why the image is not allowed, or None. A name the list does not name is allowed only
    when the list has an id it may resolve to and `image_id` (the holder's lookup) matches it;
    placement (no image_id) lets such a job through and the holder decides."""
    if not policy.allow_images:
        return None
    if image is None:
        return "the job runs no image; the dataset allows only named images"
    names = {normalise_image(entry) for entry in policy.allow_images if not _is_image_id(entry)}
    ids = [_bare_id(entry) for entry in policy.allow_images if _is_image_id(entry)]
    if normalise_image(image) in names:
        return None
    candidates = [_bare_id(image)] if _is_image_id(image) else []
    if image_id is not None:
        candidates.append(_bare_id(image_id))
    if any(
        candidate.startswith(entry) or entry.startswith(candidate)
        for candidate in candidates
        for entry in ids
    ):
        return None
    if ids and image_id is None and not _is_image_id(image):
        return None  # only the holder can tell which id the name stands for
    return f"image {image!r} is not allowed (allowed: {', '.join(policy.allow_images)})"


def policy_refusal(record: DatasetRecord, spec: JobSpec, image_id: str | None = None) -> str | None:
    """Why the dataset's policy refuses this job, or None when it admits it."""
    policy = record.policy
    prefix = f"dataset {record.name} on {record.holder.hex()[:12]}: "
    if spec.kind == "run":
        why = image_refusal(policy, spec.image, image_id)
        if why is not None:
            return prefix + why
    elif policy.allow_images and spec.kind == "wasm":
        return prefix + "only container images are allowed, and a wasm job runs none"
    if policy.allow_algorithms:
        algorithm = algorithm_digest(spec)
        if algorithm is None:
            return (
                prefix + "the job has no algorithm digest (no context or module) and only listed ones may run"
            )
        if algorithm not in policy.allow_algorithms:
            return prefix + f"algorithm {algorithm[:12]} is not allowed"
    client = client_of(spec)
    if policy.allow_clients and client not in policy.allow_clients:
        return prefix + f"client {client[:12]} is not allowed"
    return None


def job_catalog(spec: JobSpec, catalog: Catalog) -> dict[str, dict[bytes, DatasetRecord]]:
    """The part of the catalog a job needs: its datasets' holders."""
    return {name: dict(catalog.get(name, {})) for name in spec.datasets}


def dataset_reasons(spec: JobSpec, node_id: bytes, datasets: Catalog) -> tuple[str, ...]:
    """Reasons the node can never run the job for its datasets (empty: it may)."""
    reasons = []
    for name in spec.datasets:
        held = datasets.get(name, {})
        record = held.get(node_id)
        if record is None:
            where = ", ".join(sorted(n.hex()[:12] for n in held)) or "no node"
            reasons.append(f"dataset {name}: not held here (held by {where})")
            continue
        why = policy_refusal(record, spec)
        if why is not None:
            reasons.append(f"refused by policy: {why}")
    return tuple(reasons)


def holds_all(spec: JobSpec, node_id: bytes, datasets: Catalog) -> bool:
    return all(node_id in datasets.get(name, {}) for name in spec.datasets)


def output_cap(spec: JobSpec, records: Mapping[str, DatasetRecord]) -> tuple[int, str] | None:
    """The smallest max_output of the job's datasets on this node: (bytes, dataset name)."""
    caps = [
        (records[name].policy.max_output_bytes, name)
        for name in spec.datasets
        if name in records and records[name].policy.max_output_bytes
    ]
    return min(caps) if caps else None


def over_cap_reason(total: int, cap: tuple[int, str]) -> str:
    return (
        f"output cap: the job's outputs and log are {format_bytes(total)}, over dataset {cap[1]}'s "
        f"max-output of {format_bytes(cap[0])}; nothing was published"
    )


def refused_everywhere(
    spec: JobSpec, datasets: Catalog, live_in_order: list[bytes]
) -> tuple[bytes, str] | None:
    """When live nodes hold every dataset of the job but each one's policy refuses it: the
    first of them (it writes the failure) and the reasons. None otherwise (no such holder:
    the job waits for one; an admitting holder: it may run)."""
    holders = [node_id for node_id in live_in_order if holds_all(spec, node_id, datasets)]
    reasons = []
    for node_id in holders:
        refusals = [why for name in spec.datasets if (why := policy_refusal(datasets[name][node_id], spec))]
        if not refusals:
            return None
        reasons += refusals
    if not holders:
        return None
    return holders[0], "refused by dataset policy: " + "; ".join(reasons)
