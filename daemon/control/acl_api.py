"""Control methods for the ACL: grants of roles to client keys, kept in the document.

    acl.grant  {"key": hex64, "role": "read"|"submit"|"admin", "max_running": int|null} -> grant
    acl.revoke {"key": hex64}                                                          -> grant
    acl.list   {}                                   -> [{"key", "role", "max_running", "updated_at", "by"}]
    acl.whoami {}                                   -> {"key", "role", "max_running"} of the caller

A grant is a signed record in the grants map (crdt_state/grant_record.py), written by this
node and durable before the reply, so every node enforces the same ACL once it has spread.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Callable

from crdt_state.grant_record import parse_grant
from crdt_state.records import RecordError
from crdt_state.signing import seal_record
from daemon.cluster.node import Node
from daemon.control.access import ROLES, Caller, current_caller
from daemon.control.server import ControlError, Handler, param
from daemon.control.tokens import TokenError, check_token, make_token

_KEY = re.compile(r"[0-9a-f]{64}")


def grant_of(node: Node, key_hex: str) -> Caller | None:
    """The caller a client key acts as, from this node's view of the grants map."""
    entry = node.document.get("grants", key_hex)
    if entry is None:
        return None
    role, max_running = parse_grant(entry.body)
    if role == "revoked":
        return None
    return Caller(role=role, client=key_hex, max_running=max_running)


class AclApi:
    def __init__(self, node: Node, now_ms: Callable[[], int]) -> None:
        self.node = node
        self.now_ms = now_ms

    def methods(self) -> dict[str, Handler]:
        return {
            "acl.grant": self.grant,
            "acl.revoke": self.revoke,
            "acl.list": self.list,
            "acl.whoami": self.whoami,
            "token.create": self.token_create,
        }

    async def token_create(self, params: dict[str, Any]) -> Any:
        """A read token for the dashboard: {"role", "ttl_ms"} -> {"token", "url", "expires_at"}."""
        role = param(params, "role", str, optional=True, default="read")
        ttl_ms = param(params, "ttl_ms", int, optional=True, default=3_600_000)
        try:
            token = make_token(self.node.identity.private_key, role, ttl_ms, self.now_ms())
        except TokenError as exc:
            raise ControlError(str(exc)) from None
        address = self.node.capabilities.http_api
        expires = datetime.datetime.fromtimestamp((self.now_ms() + ttl_ms) / 1000, datetime.timezone.utc)
        return {
            "token": token,
            "url": f"https://{address}/#token={token}" if address else None,
            "expires_at": expires.isoformat(timespec="seconds"),
        }

    def token_caller(self, token: str) -> Caller:
        """The caller a dashboard token acts as, or TokenError."""
        known = self.node.document.node_records()
        role = check_token(token, lambda signer: signer in known, self.now_ms())
        return Caller(role=role)

    async def grant(self, params: dict[str, Any]) -> Any:
        key = _client_key(params)
        role = param(params, "role", str)
        if role not in ROLES:
            raise ControlError(f"role {role!r} is not one of {', '.join(ROLES)}")
        max_running = param(params, "max_running", int, optional=True)
        if max_running is not None and not 0 <= max_running <= 1_000_000:
            raise ControlError("max_running: expected an integer in 0..1000000")
        return self._write(key, {"role": role, "max_running": max_running})

    async def revoke(self, params: dict[str, Any]) -> Any:
        key = _client_key(params)
        if self.node.document.get("grants", key) is None:
            raise ControlError(f"no grant for client {key[:16]}")
        return self._write(key, {"role": "revoked", "max_running": None})

    async def list(self, params: dict[str, Any]) -> Any:
        rows = []
        for key, entry in sorted(self.node.document.items("grants").items()):
            role, max_running = parse_grant(entry.body)
            rows.append(_row(key, role, max_running, entry.body["updated_ms"], entry.signer_id.hex()))
        return rows

    async def whoami(self, params: dict[str, Any]) -> Any:
        caller = current_caller.get()
        return {"key": caller.client, "role": caller.role, "max_running": caller.max_running}

    def _write(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        body["updated_ms"] = self.now_ms()
        try:
            envelope = seal_record(self.node.identity.private_key, "grant", body)
            self.node.document.put_local("grants", key, envelope)
        except RecordError as exc:
            raise ControlError(f"grant refused: {exc}") from None
        self.node.commit_local(durable=True)
        self.node.log.notice("acl changed", client=key[:16], role=body["role"])
        return _row(key, body["role"], body["max_running"], body["updated_ms"], self.node.identity.node_hex)


def _client_key(params: dict[str, Any]) -> str:
    key = param(params, "key", str).strip().lower()
    if not _KEY.fullmatch(key):
        raise ControlError("key: expected a client public key of 64 hex digits (form key generate prints it)")
    return key


def _row(key: str, role: str, max_running: int | None, updated_ms: int, by: str) -> dict[str, Any]:
    updated = datetime.datetime.fromtimestamp(updated_ms / 1000, datetime.timezone.utc)
    return {
        "key": key,
        "role": role,
        "max_running": max_running,
        "updated_at": updated.isoformat(timespec="seconds"),
        "by": by,
    }
