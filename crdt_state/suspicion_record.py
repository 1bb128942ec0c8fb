"""The suspicions map's value: which nodes one observer currently suspects (daemon/cluster/probes.py).

One key per observer (its node id hex), written only by that observer, as one whole signed
value listing every target it suspects with the freshness (incarnation, heartbeat) it held
for the target when its probes failed:

    {"targets": {target_hex: [incarnation, heartbeat], ...}}

The observer drops a target once the target's freshness advanced (it refuted), or it left or
has been dead a while, so the value stays small and one key rewritten by one writer keeps
the pycrdt document from growing. Pure: parsing and size limits only; what a suspicion
means is daemon/cluster/membership.py's business.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from crdt_state.signing import RecordError

MAX_SUSPECTS = 4096  # far above what probing can produce (one target per probe interval)
MAX_INT = 2**63 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")

Freshness = tuple[int, int]


def suspicion_body(targets: Mapping[str, Freshness]) -> dict[str, Any]:
    """The body to sign for these targets; raises RecordError if no reader would accept it."""
    body = {"targets": {hex_id: [int(f[0]), int(f[1])] for hex_id, f in sorted(targets.items())}}
    parse_suspicions(body)
    return body


def parse_suspicions(body: Any) -> dict[bytes, Freshness]:
    """target id -> the freshness named, from a verified envelope's body; RecordError when malformed."""
    if not isinstance(body, Mapping) or set(body) != {"targets"}:
        raise RecordError("suspicion record body must be a map with only 'targets'")
    targets = body["targets"]
    if not isinstance(targets, Mapping):
        raise RecordError("suspicion record targets: expected a map")
    if len(targets) > MAX_SUSPECTS:
        raise RecordError(f"suspicion record names {len(targets)} targets, over the {MAX_SUSPECTS} limit")
    parsed: dict[bytes, Freshness] = {}
    for hex_id, freshness in targets.items():
        if not isinstance(hex_id, str) or not _HEX64.fullmatch(hex_id):
            raise RecordError(f"suspicion record target {str(hex_id)[:80]!r} is not a node id in hex")
        if not (
            isinstance(freshness, (list, tuple))
            and len(freshness) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT for v in freshness)
        ):
            raise RecordError(f"suspicion record target {hex_id[:12]}: expected [incarnation, heartbeat]")
        parsed[bytes.fromhex(hex_id)] = (freshness[0], freshness[1])
    return parsed
