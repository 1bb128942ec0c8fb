"""Which GPUs a container can be given: the CDI specs on this host (what `nvidia-ctk cdi
generate` writes into /etc/cdi or /var/run/cdi).

A GPU reaches a Podman job only through a CDI device of kind nvidia.com/gpu naming it, by
its UUID (preferred) or its NVML index; Podman then injects the device nodes, mounts and
environment the spec lists. A GPU no spec names is reported but offered to no job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("formnet.cdi")

GPU_KIND = "nvidia.com/gpu"
SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
MAX_SPEC_BYTES = 4 * 1024 * 1024


def device_names(spec_dirs: Iterable[str | Path], kind: str = GPU_KIND) -> set[str]:
    """Names of the devices of `kind` in the spec files (*.json, *.yaml, *.yml) of these dirs;
    files that cannot be read or parsed are skipped."""
    names: set[str] = set()
    for directory in spec_dirs:
        try:
            files = sorted(Path(directory).iterdir())
        except OSError:
            continue
        for path in files:
            if path.suffix not in (".json", ".yaml", ".yml") or not path.is_file():
                continue
            spec = _load(path)
            if isinstance(spec, dict) and spec.get("kind") == kind:
                for device in spec.get("devices") or ():
                    if isinstance(device, dict) and isinstance(device.get("name"), (str, int)):
                        names.add(str(device["name"]))
    return names


def gpu_device(index: int, uuid: str, names: set[str], kind: str = GPU_KIND) -> str:
    """The qualified CDI name giving a container this GPU, or "" when no spec names it."""
    for name in (uuid, str(index)):
        if name and name in names:
            return f"{kind}={name}"
    return ""


def _load(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            return None
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
        import yaml  # noqa: PLC0415 - only hosts with YAML specs need it

        return yaml.safe_load(text)
    except Exception as exc:  # a broken spec names no device; Podman reports it at run time
        log.debug("CDI spec %s skipped: %s", path, exc)
        return None
