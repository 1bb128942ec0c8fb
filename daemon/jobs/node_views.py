"""The job loop's view of every node (scheduling.NodeView), kept up to date by changes.

Every job-loop pass (each tick and each change) needs the views of all nodes and whether they
changed since the last full pass. Rebuilding and comparing them every pass would cost O(nodes)
per pass per node, the largest cost of a 1000-node simulation. Here an entry is recomputed only
when its node record changed (the document tells its watchers) or its status did (the
membership's statuses() answer is a new object then), so a pass where nothing changed costs
O(1), and one where k records changed O(k) plus a dict copy done in C.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from crdt_state.document import ClusterDocument
from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity
from metrics_agent.wire import WireError
from pack_manager import scheduling


class NodeViews:
    def __init__(self, node: Any, now: Callable[[], float]) -> None:
        self.node = node  # daemon.cluster.node.Node: document, membership, own capabilities and status
        self._now = now
        self._views: dict[bytes, scheduling.NodeView] = {}
        self._dirty: set[bytes] | None = None  # None: every node (at the start, after a rebuild)
        self._statuses: object = None
        self._own: tuple[object, str] | None = None
        self._document: ClusterDocument | None = None
        # Since the last take_changes(): a node came, went, or changed capabilities or status
        # (shape), or any figure changed.
        self._shape_changed = True
        self._changed = True

    def _on_change(self, map_name: str, key: str) -> None:
        if map_name == "nodes" and self._dirty is not None:
            try:
                self._dirty.add(bytes.fromhex(key))
            except ValueError:
                self._dirty = None

    def current(self) -> dict[bytes, scheduling.NodeView]:
        """Every node's view (do not change the dict: the same one is given until a change)."""
        node = self.node
        if node.document is not self._document:  # watched per document object
            self._document = node.document
            node.document.watch(self._on_change)
            self._dirty = None
        statuses = node.membership.statuses(self._now())
        own = (node.capabilities, node.status)
        me = node.identity.node_id
        if self._dirty is None:
            touched = set(node.document.node_records()) | set(self._views)
        else:
            touched = set(self._dirty)
            if statuses is not self._statuses:  # a new answer: whose status differs from the last?
                last = self._statuses if isinstance(self._statuses, dict) else {}
                touched |= {node_id for node_id, status in statuses.items() if last.get(node_id) != status}
                touched |= {node_id for node_id in last if node_id not in statuses}
            if self._own is None or own[0] is not self._own[0] or own[1] != self._own[1]:
                touched.add(me)
        if not touched:
            return self._views
        views = dict(self._views)
        for node_id in touched:
            view = self._view(node_id, self._record(node_id), statuses, own, me)
            held = views.get(node_id)
            if view is None:
                if held is not None:
                    del views[node_id]
                    self._shape_changed = self._changed = True
                continue
            if held is None or (held.capabilities, held.status) != (view.capabilities, view.status):
                self._shape_changed = True
            if held != view:
                self._changed = True
                views[node_id] = view
        self._views, self._statuses, self._own, self._dirty = views, statuses, own, set()
        return views

    def take_changes(self) -> tuple[bool, bool]:
        """(shape changed, anything changed) since the last call."""
        changes = (self._shape_changed, self._changed)
        self._shape_changed = self._changed = False
        return changes

    def _record(self, node_id: bytes):
        entry = self.node.document.get("nodes", node_id.hex())
        return entry.node if entry is not None else None

    def _view(self, node_id: bytes, record, statuses, own, me) -> scheduling.NodeView | None:
        if record is None:
            return None
        decoded = _decode(record)
        if decoded is None:
            return None
        if node_id == me:
            return scheduling.NodeView(own[0], decoded[2], own[1], record.updated_ms)
        return scheduling.NodeView(decoded[1], decoded[2], statuses.get(node_id, "dead"), record.updated_ms)


# Decoded capabilities and capacity of recent node records, by record object (records are
# immutable; the entry keeps its record alive, so an id is never reused while listed). One
# formd decodes each record it receives once; a simulation, whose nodes share the record
# objects of the envelopes they all open (simulations/sim/shared_verify.py), decodes each once
# for all of them instead of once per node (a million decodes at a 1000-node start).
DECODED_KEPT = 8192
_decoded: OrderedDict[
    int, tuple[object, NodeCapabilities, NodeCapacity | None] | tuple[object, None, None]
] = OrderedDict()


def _decode(record) -> tuple[object, NodeCapabilities, NodeCapacity | None] | None:
    held = _decoded.get(id(record))
    if held is None or held[0] is not record:
        try:
            capacity = NodeCapacity.from_wire(record.capacity) if record.capacity else None
            held = (record, NodeCapabilities.from_wire(record.capabilities), capacity)
        except (WireError, ValueError, TypeError):
            held = (record, None, None)
        _decoded[id(record)] = held
        if len(_decoded) > DECODED_KEPT:
            _decoded.popitem(last=False)
    return held if held[1] is not None else None
