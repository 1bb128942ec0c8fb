"""The node's identity: an Ed25519 key in the state dir, and its incarnation counter.

node_id = blake3(raw public key), so anyone holding a signed record can check that the key
that signed it owns the id. The key file is PKCS#8 PEM, mode 0600, and is never rewritten:
losing it means becoming a different node.

The incarnation is bumped (and fsynced) on every start before the node publishes anything,
so the fresh heartbeat counter of a restarted node is newer than whatever peers hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.signing import node_id_of

INCARNATION_NAME = "incarnation"


class IdentityError(RuntimeError):
    """The key file is missing, unreadable or not an Ed25519 key; says which file."""


@dataclass(frozen=True)
class Identity:
    private_key: Ed25519PrivateKey
    public_key: bytes  # 32 raw bytes
    node_id: bytes  # 32 bytes

    @property
    def node_hex(self) -> str:
        return self.node_id.hex()

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> "Identity":
        public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key=private_key, public_key=public, node_id=node_id_of(public))


def create_identity(key_path: Path) -> Identity:
    """Generate a new key and write it; refuses to replace an existing one."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(f"{key_path}: an identity already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return Identity.from_private_key(private_key)


def load_identity(key_path: Path) -> Identity:
    try:
        pem = key_path.read_bytes()
    except FileNotFoundError as exc:
        raise IdentityError(f"{key_path}: no node key (run `formd init` first)") from exc
    except OSError as exc:
        raise IdentityError(f"{key_path}: cannot read the node key ({exc.strerror})") from exc
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_path}: not a PEM private key") from exc
    if not isinstance(private_key, Ed25519PrivateKey):
        raise IdentityError(f"{key_path}: not an Ed25519 key")
    return Identity.from_private_key(private_key)


def bump_incarnation(state_dir: Path, at_least: int = 0) -> int:
    """Return a new incarnation above every one used before, stored durably first."""
    path = state_dir / INCARNATION_NAME
    try:
        previous = int(path.read_text(encoding="ascii").strip() or "0")
    except FileNotFoundError:
        previous = 0
    except ValueError:
        # A torn write of this tiny file; the document's copy of our record (at_least)
        # still keeps us monotonic.
        previous = 0
    current = max(previous, at_least) + 1
    temporary = path.with_name(INCARNATION_NAME + ".tmp")
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write(f"{current}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(state_dir)
    return current


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
