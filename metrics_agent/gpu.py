"""GPUs through NVML (nvidia-ml-py, imported as pynvml).

A host without the NVIDIA driver has zero GPUs: that is a normal node, worth one debug
line, not an error. A GPU whose figures fail mid-sampling (fallen off the bus, driver
reset) is left out of that sample, so placement hands nothing out on it until it answers
again; the failure is logged once per GPU until it recovers.
"""

from __future__ import annotations

import logging
from typing import Any

from .capabilities import GpuInfo
from .capacity import GpuUsage

log = logging.getLogger("formnet.metrics.gpu")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class GpuProbe:
    """One NVML session for the life of the daemon; `nvml` may be injected (tests)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._handles: list[tuple[int, Any]] = []
        self._failing: set[int] = set()
        self.available = False
        try:
            if self._nvml is None:
                import pynvml  # noqa: PLC0415 - optional at runtime: no driver is a normal case

                self._nvml = pynvml
            self._nvml.nvmlInit()
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [(i, self._nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
            self.available = True
        except Exception as exc:  # NVMLError, ImportError, OSError: all mean "no usable GPUs"
            log.debug("no NVIDIA GPUs: %s", exc)
            self._handles = []

    def inventory(self) -> tuple[GpuInfo, ...]:
        if not self.available:
            return ()
        nvml = self._nvml
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            log.debug("NVML driver version unavailable: %s", exc)
            driver = "unknown"
        gpus = []
        for index, handle in self._handles:
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                gpus.append(
                    GpuInfo(
                        index=index,
                        vendor="nvidia",
                        model=_text(nvml.nvmlDeviceGetName(handle)),
                        memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        driver_version=driver,
                        compute_capability=f"{int(major)}.{int(minor)}",
                    )
                )
            except Exception as exc:
                log.warning("GPU %d left out of the inventory: NVML error: %s", index, exc)
        return tuple(gpus)

    def usage(self) -> tuple[GpuUsage, ...]:
        if not self.available:
            return ()
        samples = []
        for index, handle in self._handles:
            try:
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                samples.append(
                    GpuUsage(
                        index=index,
                        memory_free_bytes=max(0, int(memory.free)),
                        utilization_pct=min(100, max(0, int(rates.gpu))),
                    )
                )
                if index in self._failing:
                    self._failing.discard(index)
                    log.info("GPU %d answers NVML again", index)
            except Exception as exc:
                if index not in self._failing:
                    self._failing.add(index)
                    log.warning("GPU %d not sampled (held back from placement): NVML error: %s", index, exc)
        return tuple(samples)

    def close(self) -> None:
        if self.available:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown failed: %s", exc)
            self.available = False
