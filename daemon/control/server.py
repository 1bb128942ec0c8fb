"""The control socket: a Unix socket speaking control_protocol, dispatching to a method table.

Later features add methods by adding entries to the table passed in (method name -> async
handler taking the params object). A handler raises ControlError for anything the caller got
wrong; the caller gets {"ok": false, "error": ...} and the daemon carries on. Any other
exception is a bug: it is logged and reported as an internal error, and the daemon carries on.

Open files (daemon/control/passed_files.py): a method wrapped in `TakesFile` gets the one
file that came with its request line; a handler returning `WithFile` sends an open file with
its reply. Files that came with a line whose method takes none are closed unused.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import trio

from daemon.control import passed_files
from daemon.control.access import Forbidden
from daemon.control.protocol import MAX_LINE, ProtocolError, decode_request, encode_error, encode_result
from daemon.log import EventLog

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

MAX_CONNECTIONS = 64


class ControlError(Exception):
    """The request was understood but cannot be done; the text goes back to the caller."""


def param(
    params: dict[str, Any], name: str, kind: type, *, optional: bool = False, default: Any = None
) -> Any:
    """Read one parameter with a clear error when it is missing or of the wrong type."""
    if name not in params or params[name] is None:
        if optional:
            return default
        raise ControlError(f"missing parameter {name!r}")
    value = params[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ControlError(f"parameter {name!r}: expected {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TakesFile:
    """A method whose request brings one open file: handler(params, fd); the server closes fd."""

    handler: Callable[[dict[str, Any], int], Awaitable[Any]]


@dataclass(frozen=True)
class WithFile:
    """A result sent together with an open file; the server closes fd once it is sent."""

    result: Any
    fd: int


class ControlServer:
    def __init__(self, methods: Mapping[str, Handler], log: EventLog) -> None:
        self.methods = dict(methods)
        self.log = log
        self._limit = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def dispatch(self, line: bytes, files: list[int] | None = None) -> tuple[bytes, list[int]]:
        """The reply line and the open files to send with it; takes ownership of `files`; never
        raises for anything the request holds."""
        files = list(files or ())
        try:
            reply = await self._call(line, files)
        except Exception as exc:  # a request no check foresaw must not take the daemon down
            self.log.error("control request failed", error=f"{type(exc).__name__}: {exc}"[:300])
            reply = encode_error(f"internal error: {type(exc).__name__}")
        finally:
            passed_files.close_all(files)  # whatever the method did not take
        if isinstance(reply, WithFile):
            return self._encode(reply.result), [reply.fd]
        return reply, []

    async def _call(self, line: bytes, files: list[int]) -> bytes | WithFile:
        try:
            method, params = decode_request(line)
        except ProtocolError as exc:
            self.log.warning("bad control request refused", reason=str(exc)[:200])
            return encode_error(str(exc))
        handler = self.methods.get(method)
        if handler is None:
            return encode_error(f"unknown method {method!r} (known: {', '.join(sorted(self.methods))})")
        try:
            if isinstance(handler, TakesFile):
                if len(files) != 1:
                    return encode_error(
                        f"{method} takes one open file passed with the request (SCM_RIGHTS on the "
                        f"Unix socket, as form does); {len(files)} came with it"
                    )
                result = await handler.handler(params, files[0])
            else:
                result = await handler(params)
        except (ControlError, Forbidden) as exc:
            return encode_error(str(exc))
        except Exception as exc:  # a bug in a handler must not take the daemon down
            self.log.error("control request failed", method=method, error=f"{type(exc).__name__}: {exc}")
            return encode_error(f"internal error in {method}: {type(exc).__name__}")
        if isinstance(result, WithFile):
            return result
        return self._encode(result, method)

    def _encode(self, result: Any, method: str = "") -> bytes:
        try:
            return encode_result(result)
        except (ProtocolError, TypeError, ValueError) as exc:
            return encode_error(f"{method}: result cannot be sent ({exc})")

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        async with self._limit, stream:
            buffer = bytearray()
            position = 0  # stream position of buffer[0]
            files = passed_files.LineFiles()
            skipping = False  # inside an over-long line: discard up to its newline, then resync
            try:
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > MAX_LINE:
                            if not skipping:
                                await stream.send_all(encode_error(f"request longer than {MAX_LINE} bytes"))
                            skipping = True
                            position += len(buffer)
                            buffer.clear()
                        chunk, fds = await passed_files.receive_some(stream, 65536)
                        files.arrived(position + len(buffer) + len(chunk) - 1, fds)
                        if not chunk:
                            return
                        buffer += chunk
                        continue
                    line = bytes(buffer[:newline])
                    line_files = files.take(position + newline)
                    del buffer[: newline + 1]
                    position += newline + 1
                    if skipping or not line.strip():
                        skipping = False
                        passed_files.close_all(line_files)
                        continue
                    reply, out = await self.dispatch(line, line_files)
                    try:
                        await passed_files.send_all(stream, reply, out)
                    finally:
                        passed_files.close_all(out)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, passed_files.TooManyFiles):
                return
            except Exception as exc:  # one connection's trouble closes it, never the daemon
                self.log.error("control connection closed", error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                files.close()

    async def serve(
        self, path: Path, mode: int, group: int | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """group: the socket belongs to it, and its folder lets it pass (g+x, not g+r), so its
        members reach the socket and nothing else in the folder."""
        listener = await _bind_unix(path, mode)
        if group is not None:
            os.chown(path, -1, group)
            folder = path.parent
            os.chown(folder, -1, group)
            os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) | stat.S_IXGRP)
        try:
            task_status.started(path)
            await trio.serve_listeners(self.handle_connection, [listener])
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            _unlink_quietly(path)


async def _bind_unix(path: Path, mode: int) -> trio.SocketListener:
    if path.exists():
        if await _socket_answers(path):
            raise OSError(errno.EADDRINUSE, f"{path}: another formd is already serving this socket")
        _unlink_quietly(path)  # left behind by a process that was killed
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _socket_answers(path: Path) -> bool:
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError:
        return False
    await stream.aclose()
    return True


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
