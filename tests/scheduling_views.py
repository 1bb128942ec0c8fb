"""What the pure scheduling decisions read about nodes, made by hand: capabilities, capacity
after reservations, NodeViews, and a three-node cluster of them."""

from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity, apply_reservations
from metrics_agent.units import GIB
from pack_manager.scheduling import NodeView


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
