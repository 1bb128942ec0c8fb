"""Placement orders kept per job while the known nodes' capabilities stay the same.

scheduling.order_nodes ranks every known node for a job (blake3 per node, preference scores);
the job loop decides on open jobs every pass and `form jobs` shows the status of every job,
so without keeping it the same order is computed many times per job. It depends only on the job and on the
nodes' ids and capabilities (not on liveness, capacity or runs, which decide reads
separately), so it is kept until a node comes, goes or changes its capabilities. Jobs that
prefer nodes holding their inputs are ordered by the document's holdings, which change with
runs: those are never kept.
"""

from __future__ import annotations

from typing import Callable, Mapping

from daemon.jobs.records import Job
from pack_manager import scheduling

# scheduling.order_nodes or a function giving the same orders (the simulation shares one
# computation among its nodes: simulations/sim/shared_placement.py).
OrderNodes = Callable[[scheduling.JobView, Mapping[bytes, scheduling.NodeView], str], list[bytes]]


class PlacementOrders:
    def __init__(self, policy: str, order_nodes: OrderNodes = scheduling.order_nodes) -> None:
        self.policy = policy
        self.order_nodes = order_nodes
        self._capabilities: dict[bytes, object] = {}
        self._orders: dict[str, list[bytes]] = {}
        self._nodes: Mapping[bytes, scheduling.NodeView] = {}
        self.computed = 0  # orders computed (not taken from what was kept)

    def for_nodes(self, nodes: Mapping[bytes, scheduling.NodeView]) -> "PlacementOrders":
        """Start using these node views; forgets every kept order if their capabilities differ."""
        capabilities = {node_id: view.capabilities for node_id, view in nodes.items()}
        if capabilities != self._capabilities:
            self._capabilities = capabilities
            self._orders.clear()
        self._nodes = nodes
        return self

    def order(self, job: Job) -> list[bytes]:
        """order_nodes for the job over the nodes given to for_nodes (do not modify the list)."""
        if job.spec.prefer_local_inputs:
            self.computed += 1
            return self.order_nodes(job.view(), self._nodes, self.policy)
        kept = self._orders.get(job.job_hex)
        if kept is None:
            self.computed += 1
            kept = self._orders[job.job_hex] = self.order_nodes(job.view(), self._nodes, self.policy)
        return kept

    def forget(self, job_hexes: set[str] | list[str]) -> None:
        """Jobs that left the document (retired)."""
        for job_hex in job_hexes:
            self._orders.pop(job_hex, None)
