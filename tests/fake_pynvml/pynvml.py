"""`pynvml` for a formd process under test (put this directory first on its PYTHONPATH): the
fake NVML of tests/fake_nvml.py with the GPUs $FORMNET_FAKE_GPUS names, a JSON list of
{"name", "uuid", "memory"}."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fake_nvml import FakeGpu, FakeNvml  # noqa: E402

_nvml = FakeNvml(
    [
        FakeGpu(gpu["name"], gpu["memory"], gpu["memory"], uuid=gpu["uuid"])
        for gpu in json.loads(os.environ.get("FORMNET_FAKE_GPUS", "[]"))
    ]
)
NVMLError = _nvml.NVMLError


def __getattr__(name):
    return getattr(_nvml, name)
