"""The cluster keyring: which symmetric keys seal and open transport frames.

A cluster shares one or more 32-byte keys. The primary key seals every outgoing frame;
every key in the ring opens incoming frames, so keys can be rotated without a restart
and without a flag day:

    1. add the new key on every node        (all nodes can now open frames under it)
    2. use (make primary) the new key on every node (frames are now sealed under it)
    3. remove the old key on every node     (frames under it are refused from now on)

A key is named by its key id, blake3(key)[:8], which travels in clear in each frame
header; the key itself never leaves the node.

File format (the cluster key file passed to `formd init --cluster-key-file`, and the
keyring file the daemon keeps in its state dir): one key per line, urlsafe base64 of the
32 raw bytes; the first line is the primary key; blank lines and lines starting with
'#' are ignored. A cluster key file with a single line is therefore a one-key keyring.
Written atomically with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Iterable

import blake3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
KEY_ID_BYTES = 8
# A ring is a rotation aid, not a key store; a handful of keys is all rotation needs.
MAX_KEYS = 16


class KeyringError(ValueError):
    """A key or key file is unusable, or a ring operation is not allowed; the message says why."""


def key_id_of(key: bytes) -> bytes:
    return blake3.blake3(key).digest()[:KEY_ID_BYTES]


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    _check_key(key)
    return base64.urlsafe_b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse urlsafe (or standard) base64 of exactly 32 bytes."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"cluster key is not base64: {exc}") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"cluster key must be {KEY_BYTES} bytes, this one is {len(raw)}")
    return raw


def parse_key_id(key_id: bytes | str) -> bytes:
    """Accept a key id as 8 raw bytes or as 16 hex characters (what humans see)."""
    if isinstance(key_id, bytes):
        if len(key_id) != KEY_ID_BYTES:
            raise KeyringError(f"key id must be {KEY_ID_BYTES} bytes, got {len(key_id)}")
        return key_id
    if isinstance(key_id, str):
        try:
            raw = bytes.fromhex(key_id.strip())
        except ValueError:
            raise KeyringError(f"key id {key_id!r} is not hex") from None
        if len(raw) != KEY_ID_BYTES:
            raise KeyringError(f"key id {key_id!r} must be {2 * KEY_ID_BYTES} hex characters")
        return raw
    raise KeyringError(f"key id must be bytes or hex text, got {type(key_id).__name__}")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
        raise KeyringError(f"cluster key must be {KEY_BYTES} bytes, got {size}")


class Keyring:
    """A primary key plus older keys; every mutation is checked first, then applied in one step.

    trio runs everything on one thread, so a frame is sealed or opened either wholly
    before or wholly after a rotation step; no lock is needed.
    """

    def __init__(self, primary: bytes, others: Iterable[bytes] = ()) -> None:
        _check_key(primary)
        ciphers: dict[bytes, tuple[bytes, ChaCha20Poly1305]] = {}
        for key in (primary, *others):
            _check_key(key)
            ciphers[key_id_of(key)] = (key, ChaCha20Poly1305(key))
        if len(ciphers) > MAX_KEYS:
            raise KeyringError(f"a keyring holds at most {MAX_KEYS} keys")
        self._ciphers = ciphers
        self._primary_id = key_id_of(primary)

    @classmethod
    def generate(cls) -> "Keyring":
        return cls(generate_key())

    # -- reading -------------------------------------------------------------------------

    @property
    def primary_id(self) -> bytes:
        return self._primary_id

    def primary_cipher(self) -> tuple[bytes, ChaCha20Poly1305]:
        """(key id, AEAD) to seal with."""
        return self._primary_id, self._ciphers[self._primary_id][1]

    def cipher(self, key_id: bytes) -> ChaCha20Poly1305 | None:
        """The AEAD for a key id seen in a frame header, or None when it is not in the ring."""
        entry = self._ciphers.get(key_id)
        return entry[1] if entry is not None else None

    def derive(self, key_id: bytes, salt: bytes, info: bytes) -> bytes | None:
        """A 32-byte key derived from one in the ring (HKDF-SHA256), or None when `key_id` is
        not in it: a key of its own for one file stream, the ring's keys never leaving it."""
        entry = self._ciphers.get(key_id)
        if entry is None:
            return None
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(entry[0])

    def key_ids(self) -> list[bytes]:
        """Primary first, then the others in the order they were added."""
        return [self._primary_id] + [k for k in self._ciphers if k != self._primary_id]

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._ciphers

    def __len__(self) -> int:
        return len(self._ciphers)

    def describe(self) -> list[dict[str, object]]:
        """What `form cluster-key list` can show: ids only, never key material."""
        return [{"key_id": k.hex(), "primary": k == self._primary_id} for k in self.key_ids()]

    # -- rotation ------------------------------------------------------------------------

    def add(self, key: bytes) -> bytes:
        """Add a key that may open frames; returns its id. Adding a key already held is a no-op."""
        _check_key(key)
        key_id = key_id_of(key)
        if key_id in self._ciphers:
            return key_id
        if len(self._ciphers) >= MAX_KEYS:
            raise KeyringError(f"the keyring already holds {MAX_KEYS} keys; remove an old one first")
        self._ciphers = {**self._ciphers, key_id: (key, ChaCha20Poly1305(key))}
        return key_id

    def use(self, key_id: bytes | str) -> None:
        """Make a key already in the ring the primary (the one that seals)."""
        wanted = parse_key_id(key_id)
        if wanted not in self._ciphers:
            raise KeyringError(f"key {wanted.hex()} is not in the keyring; add it first")
        self._primary_id = wanted

    def remove(self, key_id: bytes | str) -> None:
        """Forget a key: frames sealed under it are refused from now on."""
        wanted = parse_key_id(key_id)
        if wanted not in self._ciphers:
            raise KeyringError(f"key {wanted.hex()} is not in the keyring")
        if wanted == self._primary_id:
            raise KeyringError(f"key {wanted.hex()} is the primary key; make another key primary first")
        self._ciphers = {k: v for k, v in self._ciphers.items() if k != wanted}

    # -- files ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> "Keyring":
        path = Path(path)
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise KeyringError(f"cluster key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"cannot read cluster key file {path}: {exc}") from None
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                keys.append(decode_key(line))
            except KeyringError as exc:
                raise KeyringError(f"{path} line {number}: {exc}") from None
        if not keys:
            raise KeyringError(f"cluster key file {path} holds no key")
        return cls(keys[0], keys[1:])

    def save(self, path: Path | str) -> None:
        """Write atomically (temp file + rename) with mode 0600, primary key first."""
        path = Path(path)
        lines = [encode_key(self._ciphers[k][0]) for k in self.key_ids()]
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.chmod(path, 0o600)
