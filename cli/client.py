"""A blocking client for formd's control socket (the CLI needs nothing fancier)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from daemon.control_protocol import MAX_LINE, ProtocolError, decode_reply, encode_request

DEFAULT_SOCKET = "/var/lib/formd/formd.sock"
SOCKET_ENV = "FORM_SOCKET"


class ClientError(RuntimeError):
    """formd could not be reached or refused the request; the text is for the user."""


def default_socket() -> Path:
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def call(socket_path: Path, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
    """Send one request and return its result, or raise ClientError with the daemon's reason."""
    try:
        request = encode_request(method, params)
    except ProtocolError as exc:
        raise ClientError(str(exc)) from exc
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
        except FileNotFoundError as exc:
            raise ClientError(f"cannot reach formd: {socket_path} does not exist (is formd running? see --socket)") from exc
        except PermissionError as exc:
            raise ClientError(f"cannot reach formd: permission denied on {socket_path}") from exc
        except OSError as exc:
            raise ClientError(f"cannot reach formd at {socket_path}: {exc.strerror or exc}") from exc
        try:
            sock.sendall(request)
            line = _read_line(sock)
        except socket.timeout as exc:
            raise ClientError(f"formd at {socket_path} did not answer within {timeout:g}s") from exc
        except OSError as exc:
            raise ClientError(f"connection to formd at {socket_path} failed: {exc.strerror or exc}") from exc
    try:
        ok, value = decode_reply(line)
    except ProtocolError as exc:
        raise ClientError(f"formd sent a reply this client does not understand: {exc}") from exc
    if not ok:
        raise ClientError(value)
    return value


def _read_line(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ClientError("formd closed the connection without answering")
        buffer += chunk
        if len(buffer) > MAX_LINE + 1:
            raise ClientError("formd's reply is over the line limit")
    return bytes(buffer[: buffer.index(b"\n")])
