"""A blocking client for formd's control socket (the CLI needs nothing fancier).

Open files ride along with a request or reply (SCM_RIGHTS; daemon/control/passed_files.py):
`call_files` sends files with its request and returns those that came with the reply.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from cli.remote import RemoteError, RemoteTarget
from daemon.control.protocol import MAX_LINE, ProtocolError, decode_reply, encode_request

DEFAULT_SOCKET = "/var/lib/formd/formd.sock"
MAX_FILES = 4  # open files accepted with one reply
SOCKET_ENV = "FORM_SOCKET"


class ClientError(RuntimeError):
    """formd could not be reached or refused the request; the text is for the user."""


def default_socket() -> Path:
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def call(
    target: "Path | RemoteTarget", method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
) -> Any:
    """Send one request and return its result, or raise ClientError with the daemon's reason.
    The target is the local socket's path, or a node's HTTPS API (`form --remote`)."""
    if isinstance(target, RemoteTarget):
        try:
            return target.call(method, params)
        except RemoteError as exc:
            raise ClientError(str(exc)) from None
    with Connection(target, timeout=timeout) as connection:
        return connection.call(method, params)


class Connection:
    """One control connection for many requests (the protocol answers them in order): what a
    caller making many calls uses instead of `call`, which connects once per request."""

    def __init__(self, socket_path: Path, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._buffer = bytearray()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(socket_path))
        except OSError as exc:
            self._sock.close()
            if isinstance(exc, FileNotFoundError):
                raise ClientError(
                    f"cannot reach formd: {socket_path} does not exist (is formd running? see --socket)"
                ) from exc
            if isinstance(exc, PermissionError):
                raise ClientError(f"cannot reach formd: permission denied on {socket_path}") from exc
            raise ClientError(f"cannot reach formd at {socket_path}: {exc.strerror or exc}") from exc

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.call_many([(method, params)])[0]

    def call_files(
        self, method: str, params: dict[str, Any] | None = None, files: list[int] | tuple[int, ...] = ()
    ) -> tuple[Any, list[int]]:
        """One request sent with open `files` (still the caller's to close); returns the result
        and the files that came with the reply (now the caller's to close)."""
        received: list[int] = []
        try:
            return self._exchange([(method, params)], list(files), received)[0], received
        except BaseException:
            _close_all(received)
            raise

    def call_many(self, requests: list[tuple[str, dict[str, Any] | None]]) -> list[Any]:
        """Send every request, then read every reply (pipelined); raises ClientError for the
        first request formd refused, after all replies are read."""
        received: list[int] = []
        try:
            return self._exchange(requests, [], received)
        finally:
            _close_all(received)  # files nobody asked for

    def _exchange(
        self, requests: list[tuple[str, dict[str, Any] | None]], files: list[int], received: list[int]
    ) -> list[Any]:
        try:
            lines = b"".join(encode_request(method, params) for method, params in requests)
        except ProtocolError as exc:
            raise ClientError(str(exc)) from exc
        try:
            if files:
                sent = socket.send_fds(self._sock, [lines], files)
                self._sock.sendall(lines[sent:])
            else:
                self._sock.sendall(lines)
            replies = [self._read_line(received) for _ in requests]
        except socket.timeout as exc:
            raise ClientError(f"formd at {self.socket_path} did not answer within {self.timeout:g}s") from exc
        except OSError as exc:
            raise ClientError(
                f"connection to formd at {self.socket_path} failed: {exc.strerror or exc}"
            ) from exc
        results, refused = [], None
        for line in replies:
            try:
                ok, value = decode_reply(line)
            except ProtocolError as exc:
                raise ClientError(f"formd sent a reply this client does not understand: {exc}") from exc
            if not ok and refused is None:
                refused = value
            results.append(value)
        if refused is not None:
            raise ClientError(refused)
        return results

    def _read_line(self, received: list[int]) -> bytes:
        while b"\n" not in self._buffer:
            chunk, fds, _flags, _address = socket.recv_fds(
                self._sock, 65536, MAX_FILES, socket.MSG_CMSG_CLOEXEC
            )
            received.extend(fds)
            if not chunk:
                raise ClientError("formd closed the connection without answering")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE + 1 and b"\n" not in self._buffer:
                raise ClientError("formd's reply is over the line limit")
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
