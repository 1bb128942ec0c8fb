"""What a node can do: static facts collected once at start and gossiped in its record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .images import HeldImage, images_from_wire
from .named_capabilities import CapabilityNameError, check_named
from .wire import WireError, need_int, need_list, need_map, need_str, need_str_map

KNOWN_EXECUTORS = ("podman", "wasm")
MAX_REGION = 64
_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_region(region: object, what: str = "region") -> str:
    if not isinstance(region, str) or not _REGION.match(region):
        raise ValueError(
            f"{what}: {region!r} is not a region name (letters, digits, '.', '_', '-'; at most {MAX_REGION})"
        )
    return region


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    vendor: str
    model: str
    memory_bytes: int
    uuid: str
    driver_version: str
    compute_capability: str  # "8.6"; text because it is a version, never compared as a number
    # The CDI device that gives a container this GPU ("nvidia.com/gpu=GPU-…"); empty: the node
    # reports the GPU but offers it to no job (no CDI spec names it).
    cdi_device: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "vendor": self.vendor,
            "model": self.model,
            "memory_bytes": self.memory_bytes,
            "uuid": self.uuid,
            "driver_version": self.driver_version,
            "compute_capability": self.compute_capability,
            "cdi_device": self.cdi_device,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "GpuInfo":
        record = need_map(raw, "gpu")
        return cls(
            index=need_int(record, "index", high=1023),
            vendor=need_str(record, "vendor", limit=64),
            model=need_str(record, "model", limit=256),
            memory_bytes=need_int(record, "memory_bytes"),
            uuid=need_str(record, "uuid", limit=128),
            driver_version=need_str(record, "driver_version", limit=64),
            compute_capability=need_str(record, "compute_capability", limit=16),
            cdi_device=need_str(record, "cdi_device", limit=256, optional=True) or "",
        )


@dataclass(frozen=True, slots=True)
class NodeCapabilities:
    cpu_model: str
    logical_cores: int
    physical_cores: int
    cpu_millicores: int
    memory_bytes: int
    disk_bytes: int
    arch: str
    os: str
    kernel: str
    gpus: tuple[GpuInfo, ...] = ()
    executors: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    region: str = ""  # "" when the node names none
    # Named capabilities (metrics_agent/named_capabilities.py) -> max_concurrency (slots).
    named: Mapping[str, int] = field(default_factory=dict)
    # The node's HTTPS API ("host:port", empty when off) and the SHA-256 fingerprint of its
    # certificate, so a client that trusts one node can check every other.
    http_api: str = ""
    tls_fingerprint: str = ""
    # The images this node's Podman holds (metrics_agent/images.py: bounded, compact).
    images: tuple[HeldImage, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "cpu_model": self.cpu_model,
            "logical_cores": self.logical_cores,
            "physical_cores": self.physical_cores,
            "cpu_millicores": self.cpu_millicores,
            "memory_bytes": self.memory_bytes,
            "disk_bytes": self.disk_bytes,
            "arch": self.arch,
            "os": self.os,
            "kernel": self.kernel,
            "gpus": [gpu.to_wire() for gpu in self.gpus],
            "executors": list(self.executors),
            "labels": dict(self.labels),
            # Written only when set, so a node without them keeps the record it had.
            **({"region": self.region} if self.region else {}),
            **({"named": dict(self.named)} if self.named else {}),
            "http_api": self.http_api,
            "tls_fingerprint": self.tls_fingerprint,
            # Only when there are some: a node without images writes the record it always wrote.
            **({"images": [image.to_wire() for image in self.images]} if self.images else {}),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "NodeCapabilities":
        record = need_map(raw, "capabilities")
        executors = need_list(record, "executors", limit=16)
        if not all(isinstance(name, str) and len(name) <= 32 for name in executors):
            raise WireError("executors: expected a list of short names")
        return cls(
            cpu_model=need_str(record, "cpu_model", limit=256),
            logical_cores=need_int(record, "logical_cores", high=1_000_000),
            physical_cores=need_int(record, "physical_cores", high=1_000_000),
            cpu_millicores=need_int(record, "cpu_millicores"),
            memory_bytes=need_int(record, "memory_bytes"),
            disk_bytes=need_int(record, "disk_bytes"),
            arch=need_str(record, "arch", limit=64),
            os=need_str(record, "os", limit=256),
            kernel=need_str(record, "kernel", limit=256),
            gpus=tuple(GpuInfo.from_wire(gpu) for gpu in need_list(record, "gpus", limit=64)),
            executors=tuple(executors),
            labels=need_str_map(record, "labels"),
            region=_region(record),
            named=_named(record),
            http_api=need_str(record, "http_api", limit=300) if "http_api" in record else "",
            tls_fingerprint=need_str(record, "tls_fingerprint", limit=64)
            if "tls_fingerprint" in record
            else "",
            images=images_from_wire(record.get("images")),
        )

    def with_labels(self, labels: Mapping[str, str]) -> "NodeCapabilities":
        return replace(self, labels=dict(labels))

    def with_named(self, named: Mapping[str, int]) -> "NodeCapabilities":
        return replace(self, named=dict(sorted(named.items())))

    def with_images(self, images: tuple[HeldImage, ...]) -> "NodeCapabilities":
        return replace(self, images=tuple(images))


def _region(record: Mapping[str, Any]) -> str:
    if "region" not in record:
        return ""
    try:
        return check_region(record.get("region"))
    except ValueError as exc:
        raise WireError(str(exc)) from exc


def _named(record: Mapping[str, Any]) -> dict[str, int]:
    if "named" not in record:
        return {}
    raw = need_map(record.get("named"), "named")
    try:
        return check_named(raw, "named")
    except CapabilityNameError as exc:
        raise WireError(str(exc)) from exc
