"""daemon/jobs/node_views.py: the job loop's node views, kept by changes instead of rebuilt every
pass, must always equal a rebuild from scratch, and report every change of shape."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from crdt_nodes import FakeNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_nodes import CAPS

from crdt_state.records import NodeRecord
from daemon.cluster.membership import Membership, MembershipConfig
from daemon.cluster.node import static_capacity
from daemon.jobs.node_views import NodeViews
from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity
from pack_manager import scheduling

BASE = CAPS  # the simulated nodes' capabilities (tests/sim_nodes.py)


def from_scratch(node) -> dict[bytes, scheduling.NodeView]:
    """What JobLoop.node_views() computed on every pass before NodeViews."""
    views = {}
    now = node.clock
    for node_id, record in node.document.node_records().items():
        try:
            capacity = NodeCapacity.from_wire(record.capacity) if record.capacity else None
            caps = NodeCapabilities.from_wire(record.capabilities)
        except Exception:
            continue
        if node_id == node.identity.node_id:
            views[node_id] = scheduling.NodeView(node.capabilities, capacity, node.status, record.updated_ms)
        else:
            status = node.membership.status(node_id, now) or "dead"
            views[node_id] = scheduling.NodeView(caps, capacity, status, record.updated_ms)
    return views


def shape(views):
    return {node_id: (view.capabilities, view.status) for node_id, view in views.items()}


# (kind, writer, amount): 0 heartbeat with new capacity, 1 label change, 2 time passes,
# 3 a suspicion of the writer, 4 our own capabilities change, 5 our status changes,
# 6 a record that does not decode
step = st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 300))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=30))
def test_kept_views_equal_a_rebuild_and_report_every_change(steps):
    writers = [FakeNode.create() for _ in range(4)]
    me = writers[0]
    node = SimpleNamespace(
        document=me.doc,
        membership=Membership(me.node_id, MembershipConfig()),
        capabilities=BASE,
        status="alive",
        identity=SimpleNamespace(node_id=me.node_id),
        clock=0.0,
    )
    views = NodeViews(node, lambda: node.clock)
    beats = {w.node_id: 0 for w in writers}

    def write(writer, capabilities, capacity) -> None:
        beats[writer.node_id] += 1
        record = NodeRecord(
            node_id=writer.node_id,
            public_key=writer.record().public_key,
            address="127.0.0.1:1",
            incarnation=1,
            heartbeat=beats[writer.node_id],
            status="alive",
            capabilities=capabilities,
            capacity=capacity,
            version="t",
            updated_ms=1_700_000_000_000 + beats[writer.node_id],
        )
        envelope = record.seal(writer.key)
        if writer is me:
            me.doc.put_local("nodes", me.hex, envelope)
            me.doc.drain_local_updates()
            return
        writer.doc.put_local("nodes", writer.hex, envelope)
        for update in writer.doc.drain_local_updates():
            assert me.doc.apply_remote(update).accepted
        node.membership.observe(writer.node_id, 1, beats[writer.node_id], "alive", node.clock)

    for writer in writers:
        write(writer, BASE.to_wire(), static_capacity(BASE).to_wire())
    shape_then = {}
    for kind, number, amount in steps:
        writer = writers[number]
        if kind == 0:
            capacity = static_capacity(BASE).to_wire()
            capacity["cpu_millicores"] = amount
            write(writer, BASE.to_wire(), capacity)
        elif kind == 1:
            write(writer, replace(BASE, labels={"n": str(amount)}).to_wire(), static_capacity(BASE).to_wire())
        elif kind == 2:
            node.clock += amount / 10
            node.membership.tick(node.clock, 4)
        elif kind == 3:
            node.membership.observe_suspicions(
                writers[(number + 1) % 4].node_id, {writer.node_id: (1, beats[writer.node_id])}, node.clock
            )
        elif kind == 4:
            node.capabilities = replace(BASE, labels={"own": str(amount)})
        elif kind == 5:
            node.status = "left" if node.status == "alive" else "alive"
        else:
            write(writer, {"not": "capabilities"}, static_capacity(BASE).to_wire())
        current, expected = views.current(), from_scratch(node)
        assert current == expected
        shape_changed, changed = views.take_changes()
        if shape(expected) != shape_then:
            assert shape_changed
        shape_then = shape(expected)
        assert views.current() is current  # nothing changed since: the same dict, O(1)
        assert views.take_changes() == (False, False)
