"""The control socket: a Unix socket speaking control_protocol, dispatching to a method table.

Later features add methods by adding entries to the table passed in (method name -> async
handler taking the params object). A handler raises ControlError for anything the caller got
wrong; the caller gets {"ok": false, "error": ...} and the daemon carries on. Any other
exception is a bug: it is logged and reported as an internal error, and the daemon carries on.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import trio

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


class ControlServer:
    def __init__(self, methods: Mapping[str, Handler], log: EventLog) -> None:
        self.methods = dict(methods)
        self.log = log
        self._limit = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def dispatch(self, line: bytes) -> bytes:
        """The reply line for one request line; never raises for anything the request holds."""
        try:
            return await self._dispatch(line)
        except Exception as exc:  # a request no check foresaw must not take the daemon down
            self.log.error("control request failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return encode_error(f"internal error: {type(exc).__name__}")

    async def _dispatch(self, line: bytes) -> bytes:
        try:
            method, params = decode_request(line)
        except ProtocolError as exc:
            self.log.warning("bad control request refused", reason=str(exc)[:200])
            return encode_error(str(exc))
        handler = self.methods.get(method)
        if handler is None:
            return encode_error(f"unknown method {method!r} (known: {', '.join(sorted(self.methods))})")
        try:
            result = await handler(params)
        except (ControlError, Forbidden) as exc:
            return encode_error(str(exc))
        except Exception as exc:  # a bug in a handler must not take the daemon down
            self.log.error("control request failed", method=method, error=f"{type(exc).__name__}: {exc}")
            return encode_error(f"internal error in {method}: {type(exc).__name__}")
        try:
            return encode_result(result)
        except (ProtocolError, TypeError, ValueError) as exc:
            return encode_error(f"{method}: result cannot be sent ({exc})")

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        async with self._limit, stream:
            buffer = bytearray()
            skipping = False  # inside an over-long line: discard up to its newline, then resync
            try:
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > MAX_LINE:
                            if not skipping:
                                await stream.send_all(encode_error(f"request longer than {MAX_LINE} bytes"))
                            skipping = True
                            buffer.clear()
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buffer += chunk
                        continue
                    line = bytes(buffer[:newline])
                    del buffer[: newline + 1]
                    if skipping:
                        skipping = False
                        continue
                    if not line.strip():
                        continue
                    await stream.send_all(await self.dispatch(line))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except Exception as exc:  # one connection's trouble closes it, never the daemon
                self.log.error("control connection closed", error=f"{type(exc).__name__}: {exc}"[:300])

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
