"""Short-lived read tokens for the dashboard: `form token create --role read --ttl 1h`.

A token is a record signed by the node that made it (kind "token": role, expiry, a nonce),
base64url-encoded so it fits in a URL. Any node accepts it while it has not expired and its
signer is a node of the cluster, so a dashboard link works on every node. Tokens carry only
the read role: a link in a browser history must not be able to change anything.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.signing import RecordError, open_record, seal_record

TOKEN_ROLES = ("read",)
MAX_TTL_MS = 7 * 86_400_000
MAX_TOKEN_CHARS = 2048


class TokenError(Exception):
    """The token is malformed, forged, from outside the cluster or expired."""


def make_token(private_key: Ed25519PrivateKey, role: str, ttl_ms: int, now_ms: int) -> str:
    if role not in TOKEN_ROLES:
        raise TokenError(f"tokens carry only the {', '.join(TOKEN_ROLES)} role; use a client key for {role}")
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise TokenError(f"ttl: at most {MAX_TTL_MS // 86_400_000} days")
    envelope = seal_record(
        private_key, "token", {"role": role, "expires_ms": now_ms + ttl_ms, "nonce": os.urandom(8)}
    )
    return base64.urlsafe_b64encode(envelope).decode().rstrip("=")


def check_token(token: str, is_cluster_node: Callable[[bytes], bool], now_ms: int) -> str:
    """The token's role, or TokenError saying why it is not accepted."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token")
    try:
        envelope = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        signer, body = open_record(envelope, "token")
    except (binascii.Error, ValueError, RecordError):
        raise TokenError("malformed or forged token") from None
    if not is_cluster_node(signer):
        raise TokenError("token made by a node outside this cluster")
    expires = body.get("expires_ms")
    role = body.get("role")
    if not isinstance(expires, int) or role not in TOKEN_ROLES:
        raise TokenError("malformed token")
    if expires <= now_ms:
        raise TokenError("token expired: make a new one with `form token create`")
    return role
