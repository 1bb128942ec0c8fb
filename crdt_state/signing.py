"""Signed record envelopes: every value in the replicated document is one of these.

An envelope is a msgpack array `[version, kind, public_key, body, signature]` where `body` is
the msgpack encoding of a plain dict and the Ed25519 signature covers a domain-separated
message (`b"formnet record v1\\x00" + kind + b"\\x00" + body`). The kind is inside the signed
message so a record signed as one kind (say a cancel) cannot be replayed as another (a job).

A signature is checked once per envelope: the envelopes this process sealed or verified are
remembered by blake3 digest (a bounded cache), since the same bytes come back again and again
(our own writes are checked by put_local before they enter the document; a record shows up
in both a pushed update and later exchanges). Ed25519 verify is the largest cost per record.

Who may write which key is not decided here (see records.py); this module only answers
"is this well formed, who signed it, and what does it say".
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import blake3
import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ENVELOPE_VERSION = 1
MAX_RECORD = 64 * 1024
KINDS = ("node", "job", "run", "cancel", "suspicion", "grant", "token")
_DOMAIN = b"formnet record v1\x00"
VERIFIED_CACHE = 16384  # envelope digests remembered as correctly signed (32 B each)
_verified: OrderedDict[bytes, None] = OrderedDict()


class RecordError(ValueError):
    """A record that must be ignored: malformed, wrongly signed, or not owned by its signer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def node_id_of(public_key: bytes) -> bytes:
    """The 32-byte node id: blake3 of the raw 32-byte Ed25519 public key."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != 32:
        raise RecordError("public key must be 32 raw bytes")
    return blake3.blake3(bytes(public_key)).digest()


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _signed_message(kind: str, body: bytes) -> bytes:
    return _DOMAIN + kind.encode() + b"\x00" + body


def _reject_ext(code: int, data: bytes) -> Any:
    raise RecordError(f"msgpack extension type {code} is not allowed")


def unpack_plain(data: bytes, what: str) -> Any:
    """Decode untrusted msgpack into plain values (no extension types, str/bytes map keys)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_reject_ext)
    except RecordError:
        raise
    except Exception as exc:
        raise RecordError(f"{what} is not valid msgpack: {exc}") from None


def seal_record(private_key: Ed25519PrivateKey, kind: str, body: dict) -> bytes:
    if kind not in KINDS:
        raise RecordError(f"unknown record kind {kind!r}")
    if not isinstance(body, dict):
        raise RecordError("record body must be a dict")
    body_bytes = msgpack.packb(body, use_bin_type=True)
    signature = private_key.sign(_signed_message(kind, body_bytes))
    envelope = msgpack.packb(
        [ENVELOPE_VERSION, kind, raw_public_key(private_key), body_bytes, signature], use_bin_type=True
    )
    if len(envelope) > MAX_RECORD:
        raise RecordError(f"record is {len(envelope)} bytes, more than the {MAX_RECORD} limit")
    _remember_verified(blake3.blake3(envelope).digest())
    return envelope


def _remember_verified(digest: bytes) -> None:
    _verified[digest] = None
    if len(_verified) > VERIFIED_CACHE:
        _verified.popitem(last=False)


def open_record(data: bytes, kind: str) -> tuple[bytes, dict]:
    """Check an envelope of the expected kind; return (signer node id, body dict)."""
    if not isinstance(data, (bytes, bytearray)):
        raise RecordError(f"record must be bytes, got {type(data).__name__}")
    if len(data) > MAX_RECORD:
        raise RecordError(f"record is {len(data)} bytes, more than the {MAX_RECORD} limit")
    envelope = unpack_plain(bytes(data), "record envelope")
    if not isinstance(envelope, list) or len(envelope) != 5:
        raise RecordError("record envelope must be a 5-item array")
    version, got_kind, public_key, body_bytes, signature = envelope
    if version != ENVELOPE_VERSION or isinstance(version, bool):
        raise RecordError(f"unsupported record version {version!r}")
    if got_kind != kind:
        raise RecordError(f"expected a {kind!r} record, got {got_kind!r}")
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise RecordError("public key must be 32 bytes")
    if not isinstance(body_bytes, bytes):
        raise RecordError("record body must be bytes")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise RecordError("signature must be 64 bytes")
    digest = blake3.blake3(data).digest()  # the bytes include kind, public key, body and signature
    if digest not in _verified:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                signature, _signed_message(kind, body_bytes)
            )
        except (InvalidSignature, ValueError):
            raise RecordError("signature does not verify") from None
        _remember_verified(digest)
    body = unpack_plain(body_bytes, "record body")
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise RecordError("record body must be a map with text keys")
    return node_id_of(public_key), body
