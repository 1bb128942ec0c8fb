"""`form --remote`: the same control methods over a node's HTTPS API, signed by a client key.

Every command calls methods through `client.call`; with a remote target that sends
`POST /v1/call/{method}` with the params as the JSON body, signed by the client key
(daemon/control/request_signing.py), to a node whose certificate matches the pinned
SHA-256 fingerprint. The certificate itself becomes the only trust anchor of the TLS context,
so nothing else can stand in for the node.

httpx, ssl, hashlib and the key handling (cryptography) are imported by the functions that use
them: every `form` command imports this module (for RemoteTarget and RemoteError), and one on
the local socket should not pay ~40 ms of start for them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REMOTE_ENV, KEY_ENV, FINGERPRINT_ENV = "FORM_REMOTE", "FORM_KEY", "FORM_FINGERPRINT"
DEFAULT_KEY = Path("~/.config/form/client.key")


class RemoteError(RuntimeError):
    """The node could not be reached, could not be trusted, or refused; the text is for the user."""


def generate_key(path: Path) -> str:
    """Write a new Ed25519 client key (PKCS#8 PEM, 0600); return its public key (hex)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - only with keys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    from daemon.control.request_signing import public_key_hex  # noqa: PLC0415

    path = path.expanduser()
    if path.exists():
        raise RemoteError(f"{path} exists already; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_key_hex(key)


def load_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - only with keys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    path = path.expanduser()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise RemoteError(f"no client key at {path}: make one with `form key generate`") from None
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{path}: not a client key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RemoteError(f"{path}: not an Ed25519 key")
    return key


def peer_certificate(host: str, port: int, timeout: float) -> bytes:
    """The DER certificate the node presents (not yet trusted: the caller checks its fingerprint)."""
    import ssl  # noqa: PLC0415 - only for --remote

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise RemoteError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None


@dataclass
class RemoteTarget:
    """A node's HTTPS API with a pinned certificate, called with a client key."""

    url: str
    key: Ed25519PrivateKey
    fingerprint: str
    timeout: float = 120.0
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    def _connect(self) -> httpx.Client:
        if self._client is not None:
            return self._client
        import hashlib  # noqa: PLC0415 - only for --remote (it loads libcrypto)
        import ssl  # noqa: PLC0415

        import httpx  # noqa: PLC0415

        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise RemoteError(f"--remote {self.url!r}: expected https://HOST:PORT")
        port = parts.port or 443
        der = peer_certificate(parts.hostname, port, self.timeout)
        seen = hashlib.sha256(der).hexdigest()
        wanted = self.fingerprint.replace(":", "").lower()
        if not wanted:
            raise RemoteError(
                f"{self.url} presents a certificate with fingerprint {seen}; check it against `form status` "
                f"on that node and pass --fingerprint {seen} (or set {FINGERPRINT_ENV})"
            )
        if seen != wanted:
            raise RemoteError(
                f"{self.url} presents a certificate with fingerprint {seen}, not the pinned {wanted}: "
                "refusing to talk to it"
            )
        context = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(der))
        context.check_hostname = False  # the pinned certificate is the identity, whatever its name
        self._client = httpx.Client(base_url=f"https://{parts.netloc}", verify=context, timeout=self.timeout)
        return self._client

    def request(
        self, method: str, path: str, body: bytes = b"", *, stream_body: Any = None, digest: str | None = None
    ) -> httpx.Response:
        import httpx  # noqa: PLC0415 - only for --remote

        from daemon.control.request_signing import body_digest, sign_request  # noqa: PLC0415

        client = self._connect()
        headers = sign_request(self.key, method, path, digest or body_digest(body), int(time.time() * 1000))
        try:
            if stream_body is not None:
                return client.request(method, path, content=stream_body, headers=headers)
            return client.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.url} failed: {exc}") from None

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """A signed GET whose body is read as it arrives; a refusal becomes a RemoteError."""
        import httpx  # noqa: PLC0415 - only for --remote

        from daemon.control.request_signing import body_digest, sign_request  # noqa: PLC0415

        client = self._connect()
        headers = sign_request(self.key, "GET", path, body_digest(b""), int(time.time() * 1000))
        try:
            with client.stream("GET", path, headers=headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise RemoteError(error_text(response))
                yield response
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.url} failed: {exc}") from None

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        body = json.dumps(params or {}, separators=(",", ":")).encode()
        response = self.request("POST", f"/v1/call/{method}", body)
        try:
            value = response.json()
        except ValueError:
            raise RemoteError(f"{self.url} answered {response.status_code} without JSON") from None
        if response.status_code != 200:
            raise RemoteError(error_text(response))
        return value

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def error_text(response: httpx.Response) -> str:
    """The node's reason for a refusal ({"error": ...}), or the bare status."""
    try:
        value = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(value.get("error", f"HTTP {response.status_code}")) if isinstance(value, dict) else str(value)
