"""Empty network namespaces for builds that asked for no network.

Podman 4.3's build API runs RUN steps in the host's network namespace whatever `networkmode`
says; only its `nsoptions` parameter is honoured, and that can name a namespace to join. A
build without network therefore gets a namespace of its own holding only loopback, made
here with iproute2 before the build and deleted after it (named like the build's cgroup
parent, so a sweep finds what a killed formd left).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    pass


def create_empty_netns(name: str) -> Path:
    """A new network namespace with only loopback, up; its path for nsoptions."""
    for command in (["ip", "netns", "add", name], ["ip", "-n", name, "link", "set", "lo", "up"]):
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            delete_netns(name)
            detail = getattr(exc, "stderr", None) or exc
            raise NetnsError(f"cannot make an empty network namespace for the build: {detail}") from None
    return NETNS_DIR / name


def delete_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def netns_names(prefix: str) -> set[str]:
    try:
        return {entry.name for entry in NETNS_DIR.iterdir() if entry.name.startswith(prefix)}
    except OSError:
        return set()
