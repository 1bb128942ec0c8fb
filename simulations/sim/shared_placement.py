"""One placement order per job for the whole simulated cluster, not one per node.

Every node ranks every job it sees over every node it knows (daemon/jobs/placement_orders.py ->
scheduling.order_nodes): with N nodes that is N rankings of N nodes per job, 45 % of a
1000-node run with jobs. For a job without preferred labels (or input holdings to weigh) the
order is a pure function of the job id, the policy and the set of node ids, so every node
that knows the same nodes computes the same list; the simulation computes it once per
(job, policy, node set) and shares it. Jobs whose order also depends on labels or holdings
are ranked by each node as before.

Handed to every simulated node's job loop as its `order_nodes` (scheduling.order_nodes,
wrapped); one per run, bounded (oldest entries go first). The shared lists are read-only for
the node code (PlacementOrders.order's callers do not modify them).
"""

from __future__ import annotations

from typing import Any

from pack_manager import scheduling

MAX_ENTRIES = 20_000


class SharedOrders:
    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self.entries: dict[Any, list[bytes]] = {}
        self.hits = 0
        self.misses = 0
        self.order_nodes = self.wrap(scheduling.order_nodes)

    def wrap(self, order_nodes: Any) -> Any:
        def shared(
            job: scheduling.JobView, nodes: Any, policy: str = scheduling.DEFAULT_POLICY
        ) -> list[bytes]:
            if job.spec.requirements.preferred_labels or job.spec.prefer_local_inputs:
                return order_nodes(job, nodes, policy)  # depends on more than the ids (holdings, images)
            key = (job.job_id, policy, frozenset(nodes))
            found = self.entries.get(key)
            if found is None:
                self.misses += 1
                found = order_nodes(job, nodes, policy)
                if len(self.entries) >= self.limit:
                    del self.entries[next(iter(self.entries))]
                self.entries[key] = found
            else:
                self.hits += 1
            return found

        return shared
