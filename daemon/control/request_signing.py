"""Signed HTTP requests: a client's Ed25519 key signs each request; the node checks it (pure).

A request carries four headers:

    x-form-key        the client's raw Ed25519 public key, 64 hex
    x-form-time       the client's clock in ms since the epoch
    x-form-nonce      32 random hex characters, never reused within the time window
    x-form-signature  Ed25519 over canonical(method, target, time, nonce, body digest), 128 hex

The body digest is blake3 of the body, or the word "stream" for the two streamed bodies (blob
uploads, whose bytes are checked against the digest named in the path instead). A signature
binds the method, the path with its query and the body, so a captured request cannot be turned
into another; the time window and the nonce memory make a replay inside the window fail too.
Nothing here reads a clock or a socket: time and the replay memory are passed in.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from typing import Mapping

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"formnet http request v1\x00"
WINDOW_MS = 60_000
STREAM = "stream"
_HEX = re.compile(r"[0-9a-f]+")


class AuthError(Exception):
    """The request does not prove who sent it; the text says why (an HTTP 401)."""


def body_digest(body: bytes) -> str:
    return blake3.blake3(body).hexdigest()


def canonical(method: str, target: str, time_ms: int, nonce: str, digest: str) -> bytes:
    return DOMAIN + "\n".join((method.upper(), target, str(time_ms), nonce, digest)).encode()


def public_key_hex(private_key: Ed25519PrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def sign_request(
    private_key: Ed25519PrivateKey, method: str, target: str, digest: str, time_ms: int
) -> dict[str, str]:
    nonce = secrets.token_hex(16)
    signature = private_key.sign(canonical(method, target, time_ms, nonce, digest))
    return {
        "x-form-key": public_key_hex(private_key),
        "x-form-time": str(time_ms),
        "x-form-nonce": nonce,
        "x-form-signature": signature.hex(),
    }


def _hex_field(headers: Mapping[str, str], name: str, length: int) -> str:
    value = headers.get(name)
    if value is None:
        raise AuthError(f"no client key: sign the request (header {name} missing); see `form key generate`")
    if len(value) != length or not _HEX.fullmatch(value):
        raise AuthError(f"header {name}: expected {length} lowercase hex characters")
    return value


class ReplayGuard:
    """Nonces seen inside the time window, forgotten once they are older than it."""

    def __init__(self, window_ms: int = WINDOW_MS, limit: int = 100_000) -> None:
        self.window_ms = window_ms
        self.limit = limit
        self._seen: OrderedDict[str, int] = OrderedDict()

    def check_and_remember(self, nonce: str, time_ms: int, now_ms: int) -> None:
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if seen_at >= now_ms - self.window_ms and len(self._seen) < self.limit:
                break
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise AuthError("replayed request: this nonce was used already")
        self._seen[nonce] = now_ms


def verify_request(
    headers: Mapping[str, str],
    method: str,
    target: str,
    digest: str,
    now_ms: int,
    replay: ReplayGuard,
) -> str:
    """Return the client's public key (hex) when the request is signed correctly and fresh."""
    key_hex = _hex_field(headers, "x-form-key", 64)
    nonce = _hex_field(headers, "x-form-nonce", 32)
    signature = _hex_field(headers, "x-form-signature", 128)
    time_text = headers.get("x-form-time", "")
    if not time_text.isdigit() or len(time_text) > 16:
        raise AuthError("header x-form-time: expected milliseconds since the epoch")
    time_ms = int(time_text)
    if abs(now_ms - time_ms) > replay.window_ms:
        raise AuthError(
            f"request time is {abs(now_ms - time_ms) / 1000:.0f} s away from this node's clock "
            f"(at most {replay.window_ms / 1000:.0f} s): check the client's clock"
        )
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(
            bytes.fromhex(signature), canonical(method, target, time_ms, nonce, digest)
        )
    except (InvalidSignature, ValueError):
        raise AuthError("bad signature: the request was not signed by the key it names") from None
    replay.check_and_remember(nonce, time_ms, now_ms)
    return key_hex
