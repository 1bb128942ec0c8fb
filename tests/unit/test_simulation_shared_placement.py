"""simulations/sim/shared_placement.py: one order per (job, policy, node set), equal to each
node's own, and jobs whose order depends on labels are never shared."""

import os

from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity
from metrics_agent.units import GIB
from pack_manager import scheduling
from pack_manager.jobspec import JobSpec
from pack_manager.requirements import WorkloadRequirements
from simulations.sim.shared_placement import SharedOrders


def nodes(count, zone_of=lambda i: "a"):
    out = {}
    for i in range(count):
        caps = NodeCapabilities(
            "x",
            4,
            4,
            4000,
            8 * GIB,
            100 * GIB,
            "x86_64",
            "Debian",
            "6.1",
            executors=("podman", "wasm"),
            labels={"zone": zone_of(i)},
        )
        out[os.urandom(32)] = scheduling.NodeView(caps, NodeCapacity(4000, 8 * GIB, 100 * GIB), "alive", 0)
    return out


def job(**req):
    spec = JobSpec(
        kind="run",
        submitter=b"s" * 32,
        nonce=os.urandom(16),
        image="localhost/formnet/busybox",
        command=("true",),
        requirements=WorkloadRequirements.from_human(**req),
    )
    return scheduling.JobView(spec.job_id(), spec, {})


def test_a_shared_order_is_the_one_each_node_computes_and_is_computed_once_per_node_set():
    plain = scheduling.order_nodes
    known = nodes(30)
    fewer = dict(list(known.items())[:20])
    j = job()
    orders = SharedOrders()
    first = orders.order_nodes(j, dict(known))
    again = orders.order_nodes(j, dict(reversed(list(known.items()))))  # another node's view
    other_set = orders.order_nodes(j, fewer)
    assert scheduling.order_nodes is plain  # a seam handed to the nodes: nothing installed globally
    assert first == again == plain(j, known)
    assert other_set == plain(j, fewer)
    assert (orders.misses, orders.hits) == (2, 1)


def test_a_job_preferring_labels_is_ranked_by_each_node_not_shared():
    known = nodes(20, zone_of=lambda i: "a" if i % 2 else "b")
    j = job(preferred={"zone": "a"})
    orders = SharedOrders()
    order = orders.order_nodes(j, known)
    orders.order_nodes(j, known)
    assert order == scheduling.order_nodes(j, known)
    assert all(known[n].capabilities.labels["zone"] == "a" for n in order[:10])
    assert (orders.misses, orders.hits) == (0, 0)
