"""The JSON objects `form nodes` and `form status` print, read from a running Node (pure reads).

They belong to the control layer: the node keeps membership and gossip, and exposes what
these views read (records, statuses, probe and gossip counters).
"""

from __future__ import annotations

from typing import Any

import trio

from daemon.cluster.node import Node


def describe_nodes(node: Node) -> list[dict[str, Any]]:
    """What `form nodes --json` prints: one object per known node, this one first."""
    now = trio.current_time()
    nodes = []
    for node_id, record in node.document.node_records().items():
        capabilities = record.capabilities if isinstance(record.capabilities, dict) else {}
        age = node.membership.since_heartbeat(node_id, now)
        acked = node.prober.last_ack.get(node_id)
        nodes.append(
            {
                "id": node_id.hex(),
                "short_id": node_id.hex()[:12],
                "self": node_id == node.identity.node_id,
                "address": record.address,
                "status": node.peer_status(node_id, now),
                "last_heartbeat_age_s": None if age is None else round(age, 3),
                "last_probe_ack_age_s": None if acked is None else round(now - acked, 3),
                "suspected_by": node.membership.suspected_by(node_id),
                "incarnation": record.incarnation,
                "heartbeat": record.heartbeat,
                "version": record.version,
                "updated_ms": record.updated_ms,
                "labels": _text_map(capabilities.get("labels")),
                "region": capabilities.get("region") if isinstance(capabilities.get("region"), str) else "",
                "executors": [e for e in capabilities.get("executors", []) if isinstance(e, str)]
                if isinstance(capabilities.get("executors"), list)
                else [],
                "capabilities": record.capabilities,
                "capacity": record.capacity,
            }
        )
    nodes.sort(key=lambda n: (not n["self"], n["id"]))
    return nodes


def describe_self(node: Node) -> dict[str, Any]:
    """What `form status --json` prints about this node (the API adds its state dir and key)."""
    now = trio.current_time()
    return {
        "id": node.identity.node_hex,
        "short_id": node.identity.node_hex[:12],
        "address": node.address,
        "status": node.status,
        "incarnation": node.incarnation,
        "heartbeat": node.heartbeat,
        "version": node.version,
        "uptime_s": round(now - node.started_at, 3) if node.started_at is not None else 0.0,
        "known_nodes": len(node.document.node_records()),
        "live_peers": len(node.peer_addresses(include_dead=False)),
        "queued_updates": len(node.queue),
        "updates_applied": node.updates_applied,
        "updates_refused": node.updates_refused,
        "probes_sent": node.prober.probes,
        "probes_failed": node.prober.failures,
        "probes_refused": node.prober.refused,
        "refutations": node.refutations,
        "suspecting": sorted(t.hex() for t in node.own_suspicions),
        "bytes_sent": node.transport.bytes_sent,
        "bytes_received": node.transport.bytes_received,
        "frames_dropped": node.transport.dropped,
        "labels": dict(node.capabilities.labels),
        "region": node.capabilities.region,
        "capabilities": dict(node.capabilities.named),
    }


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
