"""What a formd that died mid-run leaves in Podman, found and removed by the next one.

Every container the Podman executor creates carries the labels formnet.node (this node's id)
and formnet.job, and every build runs under a cgroup parent formnet-build-<node 12 hex>-...
(and, without network, in a network namespace of that name);
the executor knows which of them its own runs hold now. Anything else of this node's is left
over from a process that is gone (kill -9, a host crash, a stop that could not finish): it is
removed, one log line each. A leftover that still runs is not adopted: its run was recorded
as yielded when formd restarted (JobLoop.yield_leftovers), so the job has moved on and what
the container produces would count for nothing.
"""

from __future__ import annotations

from typing import Any, Iterable

from .cgroups import cgroup_parents, kill_cgroup, remove_cgroup
from .netns import delete_netns, netns_names
from .podman_options import JOB_LABEL, NODE_LABEL, build_cgroup_prefix

SWEEP_INTERVAL_S = 30.0


def stray_containers(containers: Iterable[dict[str, Any]], node_hex: str, owned: set[str]) -> list[dict]:
    """The containers (as Podman lists them) of this node that no run of ours holds."""
    strays = []
    for container in containers:
        labels = container.get("Labels") or {}
        names = [name.lstrip("/") for name in container.get("Names") or ()]
        if labels.get(NODE_LABEL) == node_hex and not owned.intersection(names):
            strays.append(container)
    return strays


def sweep(client: Any, node_hex: str, owned: set[str], owned_builds: set[str]) -> list[str]:
    """Blocking: remove this node's containers and build cgroups that no run of ours holds;
    one line per thing removed. `owned` and `owned_builds` are read after Podman's listing,
    and a run adds its name before it creates anything, so a run starting meanwhile is safe."""
    removed = []
    listed = client.containers.list(all=True, filters={"label": f"{NODE_LABEL}={node_hex}"})
    for stray in stray_containers((c.attrs for c in listed), node_hex, set(owned)):
        container = client.containers.prepare_model(stray)
        try:
            container.remove(force=True, v=True)
        except Exception as exc:  # the next sweep tries again
            removed.append(f"container {container.name} not removed: {exc}")
            continue
        job = (stray.get("Labels") or {}).get(JOB_LABEL, "?")
        removed.append(f"container {container.name} of job {job[:12]} ({stray.get('State', '?')})")
    prefix = build_cgroup_prefix(node_hex)
    parents, namespaces = cgroup_parents(prefix), netns_names(prefix)
    held = set(owned_builds)  # read after listing, as for containers
    for parent in parents - held:
        killed = kill_cgroup(parent)
        remove_cgroup(parent)
        removed.append(f"build cgroup {parent} ({killed} processes killed)")
    for name in namespaces - {p.strip("/") for p in held}:
        delete_netns(name)
        removed.append(f"build network namespace {name}")
    return removed
