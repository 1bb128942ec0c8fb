"""What the pure scheduling decisions read about nodes, made by hand: capabilities, capacity
after reservations, NodeViews, and a three-node cluster of them; job specs and views, and
every node's decision on one view."""

import os

from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity, apply_reservations
from metrics_agent.units import GIB
from pack_manager.jobspec import JobSpec
from pack_manager.requirements import WorkloadRequirements
from pack_manager.scheduling import JobView, NodeView, decide


def caps(memory=8 * GIB, labels=None, executors=("podman", "wasm")):
    return NodeCapabilities(
        "x",
        4,
        4,
        4000,
        memory,
        100 * GIB,
        "x86_64",
        "Debian",
        "6.1",
        executors=executors,
        labels=labels or {},
    )


def capacity(c, held=()):
    observed = NodeCapacity(c.cpu_millicores, c.memory_bytes, c.disk_bytes)
    return apply_reservations(c, observed, held)


def view(c=None, status="alive", held=(), reported_ms=1000):
    c = c or caps()
    return NodeView(c, capacity(c, held), status, reported_ms)


NODES = [bytes([i]) * 32 for i in range(1, 4)]


def cluster(**overrides):
    nodes = {n: view() for n in NODES}
    nodes.update(overrides)
    return nodes


def spec(memory="1GiB", replicas=1, **req):
    requirements = WorkloadRequirements.from_human(memory=memory, **req)
    return JobSpec(
        kind="run",
        submitter=b"s" * 32,
        nonce=os.urandom(16),
        image="localhost/formnet/busybox",
        command=("true",),
        requirements=requirements,
        replicas=replicas,
    )


def job(s=None, runs=None, cancelled=False):
    s = s or spec()
    return JobView(s.job_id(), s, runs or {}, cancelled)


def actions(j, nodes, **kwargs):
    return {n: decide(j, nodes, n, nodes[n].capacity, **kwargs) for n in nodes}
