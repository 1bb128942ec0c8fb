"""Which executors this node can offer right now.

`podman` only when a Podman API socket actually answers `/_ping` (an installed binary
with a broken runtime is not an executor); `wasm` when wasmtime imports.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("formnet.metrics.executors")


def unix_socket_path(url: str) -> str | None:
    """'unix:///run/podman/podman.sock' or 'unix:/x' -> the path; anything else -> None."""
    for prefix in ("unix://", "unix:"):
        if url.startswith(prefix):
            path = url[len(prefix) :]
            return path if path.startswith("/") else None
    return None


def podman_answers(url: str, timeout: float = 1.0) -> bool:
    path = unix_socket_path(url)
    if path is None:
        log.debug("podman url %r is not a unix socket url", url)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            reply = sock.recv(256)
    except OSError as exc:
        log.debug("podman at %s does not answer: %s", url, exc)
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def wasm_available() -> bool:
    try:
        import wasmtime  # noqa: F401, PLC0415
    except Exception as exc:  # ImportError or a broken native library
        log.debug("wasmtime unavailable: %s", exc)
        return False
    return True


def probe_executors(podman_url: str | None) -> tuple[str, ...]:
    found = []
    if podman_url and podman_answers(podman_url):
        found.append("podman")
    if wasm_available():
        found.append("wasm")
    return tuple(found)
