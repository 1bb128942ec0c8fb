"""The body of a grants-map value: what one client key may do in the cluster (pure).

    grants[client public key hex] = {"role": "read" | "submit" | "admin" | "revoked",
                                      "max_running": int | None, "updated_ms": int}

Any known node may write a grant (an admin ran `form acl grant` there); the newest write wins
as for every map. A revoke is a grant with role "revoked", not a delete, so it is signed too
and spreads like any other write.
"""

from __future__ import annotations

from typing import Any, Mapping

from crdt_state.signing import RecordError

GRANT_ROLES = ("read", "submit", "admin", "revoked")
MAX_RUNNING_LIMIT = 1_000_000


def parse_grant(body: Mapping[str, Any]) -> tuple[str, int | None]:
    """(role, max_running) of a grant body, or RecordError saying what is wrong."""
    role = body.get("role")
    if role not in GRANT_ROLES:
        raise RecordError(f"grant role {role!r} is not one of {', '.join(GRANT_ROLES)}")
    max_running = body.get("max_running")
    if max_running is not None and (
        not isinstance(max_running, int)
        or isinstance(max_running, bool)
        or not 0 <= max_running <= MAX_RUNNING_LIMIT
    ):
        raise RecordError(f"grant max_running: expected an integer in 0..{MAX_RUNNING_LIMIT} or nothing")
    updated = body.get("updated_ms")
    if not isinstance(updated, int) or isinstance(updated, bool) or updated < 0:
        raise RecordError("grant updated_ms: expected a non-negative integer")
    return role, max_running
