"""A stand-in for pynvml on machines without an NVIDIA GPU (this one): same call names and
shapes as nvidia-ml-py, driven by a list of fake devices; errors can be switched on per call."""

from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    name: str
    total: int
    free: int
    util: int = 0
    uuid: str = "GPU-00000000"
    cc: tuple[int, int] = (8, 0)
    broken: set[str] = field(default_factory=set)  # NVML calls that raise for this device


class FakeNvml:
    NVMLError = NVMLError

    def __init__(self, gpus, *, init_error=False, driver="550.54.15"):
        self.gpus = gpus
        self.init_error = init_error
        self.driver = driver
        self.initialised = False

    def _check(self, gpu, call):
        if call in gpu.broken:
            raise NVMLError(f"{call}: GPU is lost")

    def nvmlInit(self):
        if self.init_error:
            raise NVMLError("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlShutdown(self):
        self.initialised = False

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.gpus[index]

    def nvmlSystemGetDriverVersion(self):
        return self.driver.encode()  # older pynvml returns bytes

    def nvmlDeviceGetName(self, gpu):
        self._check(gpu, "name")
        return gpu.name

    def nvmlDeviceGetUUID(self, gpu):
        return gpu.uuid

    def nvmlDeviceGetCudaComputeCapability(self, gpu):
        return gpu.cc

    def nvmlDeviceGetMemoryInfo(self, gpu):
        self._check(gpu, "memory")
        return SimpleNamespace(total=gpu.total, free=gpu.free, used=gpu.total - gpu.free)

    def nvmlDeviceGetUtilizationRates(self, gpu):
        self._check(gpu, "utilization")
        return SimpleNamespace(gpu=gpu.util, memory=0)
