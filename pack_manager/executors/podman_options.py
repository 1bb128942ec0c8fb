"""What we ask Podman for, as plain data: container create options and build parameters.

Pure functions, so the isolation a job gets (network, limits, user, mounts, capabilities)
can be read and tested in one place without a Podman.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..jobspec import JobSpec
from .base import ExecutorLimits, WorkArea

CONTEXT_MOUNT = "/data/context"
INPUTS_MOUNT = "/data/inputs"
OUTPUTS_MOUNT = "/data/outputs"
JOB_LABEL = "formnet.job"
NODE_LABEL = "formnet.node"  # the node whose formd made it: its sweep removes what it no longer owns
CPU_PERIOD_US = 100_000
JOB_TAG_PREFIX = "localhost/formnet/job-"  # a build's name while it runs (podman_images leaves it out)


def job_tag(spec: JobSpec) -> str:
    return f"{JOB_TAG_PREFIX}{spec.job_id().hex()[:16]}:latest"


def build_cgroup_prefix(node_hex: str) -> str:
    return f"formnet-build-{node_hex[:12]}-"


def build_cgroup_parent(spec: JobSpec, node_hex: str, attempt_token: str) -> str:
    return f"/{build_cgroup_prefix(node_hex)}{spec.job_id().hex()[:16]}-{attempt_token}"


def labels(spec: JobSpec, node_hex: str) -> dict[str, str]:
    return {JOB_LABEL: spec.job_id().hex(), NODE_LABEL: node_hex}


def choose_user(image_user: str | None, limits: ExecutorLimits) -> str:
    """The image's own user when it names a non-root one, otherwise nobody."""
    user = (image_user or "").strip()
    name = user.split(":", 1)[0]
    if not user or name in ("root", "0"):
        return limits.run_user
    return user


def ulimits(limits: ExecutorLimits) -> list[dict[str, Any]]:
    # Explicit values: Podman's defaults try to raise NOFILE/NPROC past the hard limit.
    return [
        {"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile},
        {"Name": "nproc", "Soft": limits.nproc, "Hard": limits.nproc},
    ]


def gpu_environment(work: WorkArea) -> dict[str, str]:
    """What CUDA and NVIDIA's tools read to find the job's GPUs (by UUID: indices inside the
    container differ from the host's)."""
    if not work.gpus:
        return {}
    uuids = ",".join(gpu.uuid for gpu in work.gpus)
    return {"NVIDIA_VISIBLE_DEVICES": uuids, "CUDA_VISIBLE_DEVICES": uuids}


def run_options(
    spec: JobSpec, work: WorkArea, limits: ExecutorLimits, user: str, name: str, node_hex: str = ""
) -> dict[str, Any]:
    req = spec.requirements
    options: dict[str, Any] = {
        "image": spec.image,
        "name": name,
        "environment": {**dict(spec.env), **gpu_environment(work)},
        "labels": labels(spec, node_hex),
        "network_mode": "bridge" if spec.network else "none",
        "mounts": [
            {"type": "bind", "source": str(work.inputs_dir), "target": INPUTS_MOUNT, "read_only": True},
            {"type": "bind", "source": str(work.outputs_dir), "target": OUTPUTS_MOUNT},
        ],
        "pids_limit": limits.pids_limit,
        "ulimits": ulimits(limits),
        "user": user,
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "privileged": False,
        "stop_timeout": max(1, int(limits.stop_grace_s)),
        # What `podman run --rm` does: the writable layer is not synced to disk, which
        # spares a syncfs at removal. The container is thrown away after one run and
        # outputs go to the bind-mounted host dir, so a host crash loses nothing of value.
        "volatile": True,
    }
    if work.context_dir is not None:
        # This run's own copy of the context: the job may write there, and the writes go
        # with the run's work area.
        options["mounts"].append({"type": "bind", "source": str(work.context_dir), "target": CONTEXT_MOUNT})
        options["working_dir"] = CONTEXT_MOUNT
    if work.gpus:
        options["devices"] = [gpu.cdi_device for gpu in work.gpus]
    if spec.command:
        options["command"] = list(spec.command)
    if req.memory_bytes:
        options["mem_limit"] = req.memory_bytes
        options["memswap_limit"] = req.memory_bytes  # no swap: the limit is the limit
    if req.cpu_millicores:
        options["cpu_period"] = CPU_PERIOD_US
        options["cpu_quota"] = max(1000, req.cpu_millicores * CPU_PERIOD_US // 1000)
    return options


# What RUN steps of a Containerfile need as root (own files, install packages, add users);
# the rest of Podman's default set (NET_BIND_SERVICE, NET_RAW, SETFCAP, SETPCAP, SYS_CHROOT,
# MKNOD, AUDIT_WRITE) is dropped.
BUILD_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
)


def build_params(
    spec: JobSpec,
    tag: str,
    cgroup_parent: str,
    node_hex: str = "",
    limits: ExecutorLimits | None = None,
    netns: Path | None = None,
) -> dict[str, Any]:
    """Query parameters for POST /build (libpod). The pids limit is set on the build's cgroup
    parent (cgroups.limit_pids): the build API has no parameter for it; no-new-privileges
    comes from the Podman service (podman_service.service_command): the API refuses it.
    netns: the empty network namespace of a build without network (netns.py)."""
    req = spec.requirements
    limits = limits or ExecutorLimits()
    params: dict[str, Any] = {
        "dropcaps": json.dumps(["ALL"]),
        "addcaps": json.dumps(list(BUILD_CAPABILITIES)),
        "ulimits": json.dumps([f"{u['Name']}={u['Soft']}:{u['Hard']}" for u in ulimits(limits)]),
        "dockerfile": spec.containerfile,
        "t": tag,
        "rm": True,
        "forcerm": True,
        "layers": False,  # no intermediate images to leave behind
        "pull": False,  # no registry is reachable; FROM must name a local image
        # The API ignores networkmode (RUN steps get the host's network); nsoptions is
        # honoured: a private bridged namespace, or the empty one made for this build.
        "nsoptions": json.dumps(
            [{"Name": "network", "Host": False, "Path": "" if spec.network else str(netns)}]
        ),
        "cgroupparent": cgroup_parent,
        "labels": json.dumps(labels(spec, node_hex)),
        "outputformat": "application/vnd.oci.image.manifest.v1+json",
    }
    if req.memory_bytes:
        params["memory"] = req.memory_bytes
        params["memswap"] = req.memory_bytes
    if req.cpu_millicores:
        params["cpuperiod"] = CPU_PERIOD_US
        params["cpuquota"] = max(1000, req.cpu_millicores * CPU_PERIOD_US // 1000)
    return params
