"""Who may call which control method: roles, grants and the caller of a request (pure).

Roles nest: `read` (look at nodes, jobs, logs, results), `submit` (read, plus submit jobs and
cancel one's own), `admin` (everything: others' jobs, labels, capabilities, cluster keys, the
ACL). The local control socket acts as admin: whoever can open it is root on the node or in
its `socket_group`. HTTP callers are clients identified by their key and the grant the
document holds for it (crdt_state grants map, written through `form acl grant`).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

ROLES = ("read", "submit", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# The least role each control method needs; a method not listed needs admin.
METHOD_ROLES: dict[str, str] = {
    "nodes": "read",
    "status": "read",
    "images": "read",
    "datasets": "read",
    "job.status": "read",
    "job.list": "read",
    "job.explain": "read",
    "job.files": "read",
    "job.log": "read",
    "job.limits": "read",
    "job.plan": "read",
    "blob.read": "read",
    "acl.whoami": "read",
    "token.create": "admin",
    "job.submit": "submit",
    "job.submit-many": "submit",
    "job.cancel": "submit",
    "blob.put": "submit",
}


class Forbidden(Exception):
    """The caller is known but its role does not allow this (an HTTP 403)."""


@dataclass(frozen=True)
class Caller:
    """Who sent the request being served: the local socket (admin) or a client key."""

    role: str
    client: str | None = None  # the client's public key, hex; None for the local socket
    max_running: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


LOCAL_ADMIN = Caller(role="admin")

# The caller of the control request this task serves; the local socket leaves the default.
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("current_caller", default=LOCAL_ADMIN)


def required_role(method: str) -> str:
    return METHOD_ROLES.get(method, "admin")


def authorize(caller: Caller, method: str) -> None:
    needed = required_role(method)
    if not caller.may(needed):
        raise Forbidden(f"{method} needs role {needed}; this client has role {caller.role}")
