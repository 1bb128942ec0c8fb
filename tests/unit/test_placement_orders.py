"""PlacementOrders (daemon/jobs/placement_orders.py): the kept order is scheduling.order_nodes' own,
and it is computed again whenever what it depends on changes."""

import os

from scheduling_views import NODES, caps, cluster, view

from daemon.jobs.placement_orders import PlacementOrders
from daemon.jobs.records import Job
from pack_manager.jobspec import JobSpec
from pack_manager.requirements import WorkloadRequirements
from pack_manager.scheduling import order_nodes


def a_job(prefer="", prefer_local_inputs=False) -> Job:
    requirements = WorkloadRequirements.from_human(memory="1GiB", preferred=[prefer] if prefer else [])
    spec = JobSpec(
        kind="run",
        submitter=NODES[0],
        nonce=os.urandom(16),
        image="localhost/formnet/busybox",
        command=("true",),
        requirements=requirements,
        prefer_local_inputs=prefer_local_inputs,
    )
    return Job(spec.job_id().hex(), spec, 1)


def test_the_order_is_order_nodes_and_is_kept_while_capabilities_stay():
    orders = PlacementOrders("hashed-xor")
    jobs = [a_job() for _ in range(20)]
    nodes = cluster()
    for job in jobs:
        assert orders.for_nodes(nodes).order(job) == order_nodes(job.view(), nodes)
    assert orders.computed == 20
    # Liveness and capacity are not part of the order: a node going dead keeps every order.
    dead = {**cluster(), NODES[1]: view(status="dead")}
    for job in jobs:
        assert orders.for_nodes(dead).order(job) == order_nodes(job.view(), dead)
    assert orders.computed == 20


def test_a_node_joining_or_changing_its_labels_orders_again():
    orders = PlacementOrders("hashed-xor")
    job = a_job(prefer="zone=b")
    nodes = cluster()
    orders.for_nodes(nodes).order(job)
    labelled = {**cluster(), NODES[2]: view(caps(labels={"zone": "b"}))}
    assert orders.for_nodes(labelled).order(job)[0] == NODES[2] == order_nodes(job.view(), labelled)[0]
    joined = {**labelled, b"\x09" * 32: view()}
    assert orders.for_nodes(joined).order(job) == order_nodes(job.view(), joined)
    assert orders.computed == 3


def test_jobs_that_follow_their_inputs_and_retired_jobs_are_not_kept():
    orders = PlacementOrders("hashed-xor")
    nodes = cluster()
    local = a_job(prefer_local_inputs=True)
    orders.for_nodes(nodes).order(local)
    orders.for_nodes(nodes).order(local)
    assert orders.computed == 2
    job = a_job()
    orders.for_nodes(nodes).order(job)
    orders.forget([job.job_hex])
    orders.for_nodes(nodes).order(job)
    assert orders.computed == 4
