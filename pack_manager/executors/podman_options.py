"""What we ask Podman for, as plain data: container create options and build parameters.

Pure functions, so the isolation a job gets (network, limits, user, mounts, capabilities)
can be read and tested in one place without a Podman.
"""

from __future__ import annotations

from typing import Any

from ..jobspec import JobSpec
from .base import ExecutorLimits, WorkArea

INPUTS_MOUNT = "/data/inputs"
OUTPUTS_MOUNT = "/data/outputs"
JOB_LABEL = "formnet.job"
CPU_PERIOD_US = 100_000
JOB_TAG_PREFIX = "localhost/formnet/job-"  # a build's name while it runs (podman_images leaves it out)


def job_tag(spec: JobSpec) -> str:
    return f"{JOB_TAG_PREFIX}{spec.job_id().hex()[:16]}:latest"


def build_cgroup_parent(spec: JobSpec, attempt_token: str) -> str:
    return f"/formnet-build-{spec.job_id().hex()[:16]}-{attempt_token}"


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


def run_options(
    spec: JobSpec, work: WorkArea, limits: ExecutorLimits, user: str, name: str
) -> dict[str, Any]:
    req = spec.requirements
    options: dict[str, Any] = {
        "image": spec.image,
        "name": name,
        "environment": dict(spec.env),
        "labels": {JOB_LABEL: spec.job_id().hex()},
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
    if spec.command:
        options["command"] = list(spec.command)
    if req.memory_bytes:
        options["mem_limit"] = req.memory_bytes
        options["memswap_limit"] = req.memory_bytes  # no swap: the limit is the limit
    if req.cpu_millicores:
        options["cpu_period"] = CPU_PERIOD_US
        options["cpu_quota"] = max(1000, req.cpu_millicores * CPU_PERIOD_US // 1000)
    return options


def build_params(spec: JobSpec, tag: str, cgroup_parent: str) -> dict[str, Any]:
    """Query parameters for POST /build (libpod)."""
    req = spec.requirements
    params: dict[str, Any] = {
        "dockerfile": spec.containerfile,
        "t": tag,
        "rm": True,
        "forcerm": True,
        "layers": False,  # no intermediate images to leave behind
        "pull": False,  # no registry is reachable; FROM must name a local image
        "networkmode": "bridge" if spec.network else "none",
        "cgroupparent": cgroup_parent,
        "labels": '{"%s": "%s"}' % (JOB_LABEL, spec.job_id().hex()),
        "outputformat": "application/vnd.oci.image.manifest.v1+json",
    }
    if req.memory_bytes:
        params["memory"] = req.memory_bytes
        params["memswap"] = req.memory_bytes
    if req.cpu_millicores:
        params["cpuperiod"] = CPU_PERIOD_US
        params["cpuquota"] = max(1000, req.cpu_millicores * CPU_PERIOD_US // 1000)
    return params
