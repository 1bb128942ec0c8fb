"""What a workload asks of the node that runs it.

Built from human input (`from_human`, used by the CLI) or decoded from a peer's bytes
(`from_wire`, validated: a peer's bytes are untrusted). Integers only inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import msgpack

from metrics_agent.capabilities import KNOWN_EXECUTORS, MAX_REGION, check_region
from metrics_agent.named_capabilities import MAX_NAMED, check_pattern
from metrics_agent.units import MAX_BYTES, MAX_MILLICORES, UnitError, parse_bytes, parse_cpu
from metrics_agent.wire import WireError, need_int, need_list, need_map, need_str, need_str_map

from .selectors import LABEL_KEY, Selector, SelectorError, parse_selectors

MAX_GPUS = 64
DEFAULT_CPU_MILLICORES = 100
DEFAULT_MEMORY_BYTES = 128 * 1024**2


class RequirementsError(ValueError):
    """Requirements that cannot be accepted; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class WorkloadRequirements:
    cpu_millicores: int = DEFAULT_CPU_MILLICORES
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    disk_bytes: int = 0
    gpu_count: int = 0
    gpu_model: str | None = None  # case-insensitive substring of the GPU's model name
    gpu_memory_bytes: int = 0  # per GPU
    executor: str = "podman"
    labels: Mapping[str, str] = field(default_factory=dict)  # required: k=v must match
    preferred_labels: Mapping[str, str] = field(default_factory=dict)  # break ties, never exclude
    selectors: tuple[Selector, ...] = ()  # required: every one must hold (pack_manager.selectors)
    capabilities: tuple[str, ...] = ()  # named-capability patterns, one slot of each (sorted, unique)
    region: str | None = None

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def from_human(
        cls,
        *,
        cpu: str | None = None,
        memory: str | None = None,
        disk: str | None = None,
        gpu: int | str | None = None,
        gpu_model: str | None = None,
        gpu_memory: str | None = None,
        executor: str = "podman",
        labels: list[str] | Mapping[str, str] = (),
        preferred: list[str] | Mapping[str, str] = (),
        select: list[str] | tuple[str, ...] = (),
        capabilities: list[str] | tuple[str, ...] = (),
        region: str | None = None,
    ) -> "WorkloadRequirements":
        try:
            return cls(
                cpu_millicores=DEFAULT_CPU_MILLICORES if cpu is None else parse_cpu(cpu),
                memory_bytes=DEFAULT_MEMORY_BYTES if memory is None else parse_bytes(memory, "memory"),
                disk_bytes=0 if disk is None else parse_bytes(disk, "disk"),
                gpu_count=0 if gpu is None else _parse_gpu_count(gpu),
                gpu_model=gpu_model or None,
                gpu_memory_bytes=0 if gpu_memory is None else parse_bytes(gpu_memory, "gpu memory"),
                executor=executor,
                labels=parse_labels(labels, "label"),
                preferred_labels=parse_labels(preferred, "prefer"),
                selectors=parse_selectors(list(select)),
                capabilities=tuple(sorted(set(capabilities))),
                region=region or None,
            )
        except (UnitError, SelectorError) as exc:
            raise RequirementsError(str(exc)) from exc

    def to_wire(self) -> dict[str, Any]:
        return {
            "cpu_millicores": self.cpu_millicores,
            "memory_bytes": self.memory_bytes,
            "disk_bytes": self.disk_bytes,
            "gpu_count": self.gpu_count,
            "gpu_model": self.gpu_model,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "executor": self.executor,
            "labels": dict(self.labels),
            "preferred_labels": dict(self.preferred_labels),
            # Written only when set, so specs without them keep the bytes (and ids) they had.
            **({"selectors": [s.text for s in self.selectors]} if self.selectors else {}),
            **({"capabilities": list(self.capabilities)} if self.capabilities else {}),
            **({"region": self.region} if self.region else {}),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "WorkloadRequirements":
        try:
            record = need_map(raw, "requirements")
            return cls(
                cpu_millicores=need_int(record, "cpu_millicores", high=MAX_MILLICORES),
                memory_bytes=need_int(record, "memory_bytes", high=MAX_BYTES),
                disk_bytes=need_int(record, "disk_bytes", high=MAX_BYTES),
                gpu_count=need_int(record, "gpu_count", high=MAX_GPUS),
                gpu_model=need_str(record, "gpu_model", limit=256, optional=True),
                gpu_memory_bytes=need_int(record, "gpu_memory_bytes", high=MAX_BYTES),
                executor=need_str(record, "executor", limit=32),
                labels=need_str_map(record, "labels"),
                preferred_labels=need_str_map(record, "preferred_labels"),
                selectors=_wire_selectors(record),
                capabilities=tuple(need_list(record, "capabilities", limit=MAX_NAMED))
                if "capabilities" in record
                else (),
                region=need_str(record, "region", limit=MAX_REGION) if "region" in record else None,
            )
        except (WireError, SelectorError) as exc:
            raise RequirementsError(f"requirements: {exc}") from exc

    def pack(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def unpack(cls, data: bytes) -> "WorkloadRequirements":
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise RequirementsError(f"requirements: not valid msgpack ({exc})") from exc
        return cls.from_wire(raw)


def parse_labels(items: list[str] | Mapping[str, str], what: str) -> dict[str, str]:
    """['zone=a', 'disk=ssd'] -> {'zone': 'a', 'disk': 'ssd'}; a clear error otherwise."""
    if isinstance(items, Mapping):
        pairs = list(items.items())
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            raise RequirementsError(f"{what}: keys and values must be text")
    elif isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise RequirementsError(f"{what}: expected a list of key=value texts")
    else:
        pairs = []
        for item in items:
            if not isinstance(item, str):
                raise RequirementsError(f"{what}: {item!r:.80} is not key=value text")
            key, sep, value = item.partition("=")
            if not sep:
                raise RequirementsError(f"{what}: {item!r} is not key=value")
            pairs.append((key.strip(), value.strip()))
    labels: dict[str, str] = {}
    for key, value in pairs:
        if not LABEL_KEY.match(key):
            raise RequirementsError(f"{what}: key {key!r} must be letters, digits, '.', '_', '-' or '/'")
        if len(value) > 256 or any(ch in value for ch in "\n\r\x00"):
            raise RequirementsError(f"{what}: value of {key!r} must be one line of at most 256 characters")
        if key in labels and labels[key] != value:
            raise RequirementsError(f"{what}: {key!r} given twice with different values")
        labels[key] = value
    return labels


def _check_named(req: WorkloadRequirements) -> None:
    if not isinstance(req.capabilities, tuple) or len(req.capabilities) > MAX_NAMED:
        raise RequirementsError(f"capability: at most {MAX_NAMED} named capabilities")
    try:
        for pattern in req.capabilities:
            check_pattern(pattern)
        if req.region is not None:
            check_region(req.region)
    except ValueError as exc:
        raise RequirementsError(str(exc)) from exc
    if list(req.capabilities) != sorted(set(req.capabilities)):
        raise RequirementsError("capability: names must be sorted without duplicates")


def _wire_selectors(record: Mapping[str, Any]) -> tuple[Selector, ...]:
    if "selectors" not in record:
        return ()
    texts = need_list(record, "selectors", limit=64)
    if not all(isinstance(text, str) and len(text) <= 4096 for text in texts):
        raise WireError("selectors: expected a list of selector texts")
    return parse_selectors(texts)


def _parse_gpu_count(text: int | str) -> int:
    try:
        count = int(str(text).strip())
    except ValueError as exc:
        raise RequirementsError(f"gpu: {text!r} is not a whole number of GPUs") from exc
    if not 0 <= count <= MAX_GPUS:
        raise RequirementsError(f"gpu: {count} is outside 0..{MAX_GPUS}")
    return count


def _check(req: WorkloadRequirements) -> None:
    for name, value, high in (
        ("cpu", req.cpu_millicores, MAX_MILLICORES),
        ("memory", req.memory_bytes, MAX_BYTES),
        ("disk", req.disk_bytes, MAX_BYTES),
        ("gpu", req.gpu_count, MAX_GPUS),
        ("gpu memory", req.gpu_memory_bytes, MAX_BYTES),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
            raise RequirementsError(f"{name}: {value!r} is outside 0..{high}")
    if req.executor not in KNOWN_EXECUTORS:
        raise RequirementsError(f"executor: {req.executor!r} is not one of {', '.join(KNOWN_EXECUTORS)}")
    if (req.gpu_model or req.gpu_memory_bytes) and req.gpu_count == 0:
        raise RequirementsError("gpu: a GPU model or GPU memory was given but no GPU count (--gpu N)")
    if req.executor == "wasm" and req.gpu_count:
        raise RequirementsError("gpu: the wasm executor cannot use GPUs")
    # Re-validate label maps so a directly-constructed value obeys the same rules as parsed input.
    parse_labels(dict(req.labels), "label")
    parse_labels(dict(req.preferred_labels), "prefer")
    _check_named(req)
    if not isinstance(req.selectors, tuple) or not all(isinstance(s, Selector) for s in req.selectors):
        raise RequirementsError("select: expected a tuple of parsed selectors")
    try:
        if parse_selectors([s.text for s in req.selectors]) != req.selectors:
            raise RequirementsError("select: selectors must be in canonical order without duplicates")
    except SelectorError as exc:
        raise RequirementsError(str(exc)) from exc
