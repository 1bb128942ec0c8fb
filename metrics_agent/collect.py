"""Collect NodeCapabilities once at start and sample NodeCapacity every tick (psutil + NVML)."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import psutil

from .capabilities import NodeCapabilities
from .capacity import NodeCapacity, Reservation, apply_reservations
from .gpu import GpuProbe

log = logging.getLogger("formnet.metrics")

_probes: dict[int, GpuProbe] = {}


def _gpu_probe(nvml: Any) -> GpuProbe:
    # One NVML session per process (per injected module in tests): nvmlInit is not free.
    key = id(nvml)
    probe = _probes.get(key)
    if probe is None:
        probe = _probes[key] = GpuProbe(nvml)
    return probe


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()
    except OSError:
        return platform.system()


def collect_capabilities(
    state_dir: Path,
    labels: Mapping[str, str],
    executors: Sequence[str],
    nvml: Any = None,
) -> NodeCapabilities:
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    psutil.cpu_percent(interval=None)  # prime: the first reading has no interval to measure
    return NodeCapabilities(
        cpu_model=_cpu_model(),
        logical_cores=logical,
        physical_cores=physical,
        cpu_millicores=logical * 1000,
        memory_bytes=psutil.virtual_memory().total,
        disk_bytes=psutil.disk_usage(str(state_dir)).total,
        arch=platform.machine(),
        os=_os_name(),
        kernel=platform.release(),
        gpus=_gpu_probe(nvml).inventory(),
        executors=tuple(executors),
        labels=dict(labels),
    )


def sample_capacity(
    state_dir: Path,
    capabilities: NodeCapabilities,
    reservations: Iterable[Reservation],
    nvml: Any = None,
) -> NodeCapacity:
    busy_pct = psutil.cpu_percent(interval=None)  # since the previous call: one tick
    idle = max(0, capabilities.cpu_millicores - int(capabilities.cpu_millicores * busy_pct) // 100)
    load1, load5, load15 = os.getloadavg()
    observed = NodeCapacity(
        cpu_millicores_idle=idle,
        memory_available_bytes=psutil.virtual_memory().available,
        disk_free_bytes=psutil.disk_usage(str(state_dir)).free,
        gpus=_gpu_probe(nvml).usage(),
        load_avg_milli=(int(load1 * 1000), int(load5 * 1000), int(load15 * 1000)),
    )
    return apply_reservations(capabilities, observed, reservations)
