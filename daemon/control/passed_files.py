"""Open files across the control socket (SCM_RIGHTS ancillary data on the Unix socket).

`form` hands formd an input by passing the open file, so its bytes never travel through the
line protocol (no base64, no chunking) and formd reads them with the client's own right to
read them: formd never opens a path a client names, so a client cannot make formd read what
the client itself may not. formd hands `form` a stored blob (a result, a log) the same way.

A file travels with the request or reply line it belongs to, sent by the same sendmsg call.
Linux returns a stream socket's data up to and including the segment that carries files and
stops there, so the files of one recvmsg belong to the line holding that read's last byte.
`LineFiles` keeps that attribution (pure); the functions below are the trio driver.
"""

from __future__ import annotations

import array
import os
import socket as stdlib_socket
from collections import deque

import trio

MAX_FILES_PER_READ = 4  # room in the ancillary buffer; more in one message are closed by the kernel
MAX_HELD = 16  # files received whose line has not ended yet: more and the connection is dropped
_FD = array.array("i")
_ANCILLARY_ROOM = stdlib_socket.CMSG_SPACE(MAX_FILES_PER_READ * _FD.itemsize)


class TooManyFiles(Exception):
    """A client sent more open files than lines to use them; its connection is closed."""


class LineFiles:
    """Files received on one connection, each tagged with the stream position of the last
    byte read with it, handed out per request line (by the position of its newline)."""

    def __init__(self) -> None:
        self._held: deque[tuple[int, int]] = deque()  # (stream position, fd)

    def arrived(self, position: int, fds: list[int]) -> None:
        self._held.extend((position, fd) for fd in fds)
        if len(self._held) > MAX_HELD:
            raise TooManyFiles(f"more than {MAX_HELD} open files sent without their request lines")

    def take(self, line_end: int) -> list[int]:
        """The files that came with the line whose newline is at stream position `line_end`
        (and any left over from earlier lines, which the caller closes)."""
        taken = []
        while self._held and self._held[0][0] <= line_end:
            taken.append(self._held.popleft()[1])
        return taken

    def close(self) -> None:
        close_all(fd for _, fd in self._held)
        self._held.clear()


def close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def carries_files(stream: trio.abc.Stream) -> bool:
    sock = getattr(stream, "socket", None)
    return sock is not None and sock.family == stdlib_socket.AF_UNIX


async def receive_some(stream: trio.abc.Stream, max_bytes: int) -> tuple[bytes, list[int]]:
    """Bytes and the open files that came with them (close-on-exec in this process)."""
    if not carries_files(stream):
        return await stream.receive_some(max_bytes), []
    data, ancillary, _flags, _address = await stream.socket.recvmsg(
        max_bytes, _ANCILLARY_ROOM, stdlib_socket.MSG_CMSG_CLOEXEC
    )
    return data, files_in(ancillary)


def files_in(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == stdlib_socket.SOL_SOCKET and kind == stdlib_socket.SCM_RIGHTS:
            whole = len(data) - len(data) % _FD.itemsize
            fds.extend(array.array("i", data[:whole]))
    return fds


async def send_all(stream: trio.abc.Stream, data: bytes, fds: list[int]) -> None:
    """Send `data`, the files riding with its first byte; the caller still owns (closes) them."""
    if not fds:
        await stream.send_all(data)
        return
    if not carries_files(stream):
        raise OSError("this connection cannot carry open files")
    sent = await stream.socket.sendmsg(
        [data], [(stdlib_socket.SOL_SOCKET, stdlib_socket.SCM_RIGHTS, array.array("i", fds))]
    )
    if sent < len(data):
        await stream.send_all(data[sent:])
