"""Reading CDI specs: which GPU a container can be given, by UUID or index, from YAML or JSON."""

import json

from pack_manager.executors.cdi import device_names, gpu_device

NVIDIA_CTK_YAML = """---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: GPU-8d3c1a2e
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: all
kind: nvidia.com/gpu
"""


def test_device_names_come_from_specs_of_the_gpu_kind_only(tmp_path):
    (tmp_path / "nvidia.yaml").write_text(NVIDIA_CTK_YAML)
    (tmp_path / "other.json").write_text(json.dumps({"kind": "vendor.com/fpga", "devices": [{"name": "x"}]}))
    (tmp_path / "broken.yaml").write_text("kind: [unclosed")
    (tmp_path / "notes.txt").write_text("kind: nvidia.com/gpu")
    names = device_names([tmp_path, tmp_path / "missing"])
    assert names == {"0", "GPU-8d3c1a2e", "all"}
    assert gpu_device(0, "GPU-8d3c1a2e", names) == "nvidia.com/gpu=GPU-8d3c1a2e"  # the UUID first
    assert gpu_device(0, "GPU-unknown", names) == "nvidia.com/gpu=0"
    assert gpu_device(1, "GPU-unknown", names) == ""
    assert device_names([tmp_path / "missing"]) == set()
