"""Open files over the control socket (daemon/control/passed_files.py) with a real Unix socket:
a file reaches the request it was sent with, even pipelined behind others; a file sent with a
request that takes none is closed, not kept; a reply can carry a file; a flood of files drops
the connection."""

import os
import socket

import trio

from cli.client import Connection
from daemon.control.passed_files import MAX_HELD, LineFiles
from daemon.control.protocol import encode_request
from daemon.control.server import ControlServer, TakesFile, WithFile
from daemon.log import EventLog


def make_server(tmp_path):
    (tmp_path / "offered").write_bytes(b"a file formd offers")

    async def echo(params):
        return params

    async def read_file(params, fd):
        return {"tag": params.get("tag"), "text": os.pread(fd, 100, 0).decode()}

    async def offer(params):
        return WithFile({"offered": True}, os.open(tmp_path / "offered", os.O_RDONLY))

    return ControlServer({"echo": echo, "read": TakesFile(read_file), "offer": offer}, EventLog())


def writer_closed_everywhere(read_end: int) -> bool:
    """True when no process holds the pipe's write end any more (a read sees end of file)."""
    os.set_blocking(read_end, False)
    try:
        return os.read(read_end, 1) == b""
    except BlockingIOError:
        return False


def exchange(path, sends: list[tuple[bytes, list[int]]], replies: int) -> list[bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        for data, fds in sends:
            socket.send_fds(sock, [data], fds) if fds else sock.sendall(data)
        received = b""
        while received.count(b"\n") < replies:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received.splitlines()


async def test_files_reach_their_own_request_and_stray_ones_are_closed(tmp_path):
    server = make_server(tmp_path)
    path = tmp_path / "c.sock"
    (tmp_path / "one").write_bytes(b"first file")
    (tmp_path / "two").write_bytes(b"second file")
    one = os.open(tmp_path / "one", os.O_RDONLY)
    two = os.open(tmp_path / "two", os.O_RDONLY)
    stray_read, stray_write = os.pipe()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, 0o600)
        sends = [
            (encode_request("echo", {"n": 1}), [stray_write]),  # echo takes no file: closed
            (encode_request("read", {"tag": "a"}), [one]),
            (encode_request("echo", {"n": 2}), []),
            (encode_request("read", {"tag": "b"}), [two]),
            (encode_request("read", {"tag": "none"}), []),
        ]
        lines = await trio.to_thread.run_sync(exchange, path, sends, len(sends))
        os.close(stray_write)
        assert b'"text":"first file"' in lines[1] and b'"tag":"a"' in lines[1]
        assert b'"text":"second file"' in lines[3] and b'"tag":"b"' in lines[3]
        assert b"takes one open file" in lines[4] and b"0 came with it" in lines[4]
        assert writer_closed_everywhere(stray_read)

        def offered():
            with Connection(path) as connection:
                result, files = connection.call_files("offer")
            with os.fdopen(files[0], "rb") as handle:
                return result, handle.read()

        assert await trio.to_thread.run_sync(offered) == ({"offered": True}, b"a file formd offers")
        nursery.cancel_scope.cancel()
    for fd in (one, two, stray_read):
        os.close(fd)


async def test_a_flood_of_files_without_requests_drops_the_connection(tmp_path):
    server = make_server(tmp_path)
    path = tmp_path / "c.sock"
    read_end, write_end = os.pipe()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, 0o600)

        def flood():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                try:
                    for _ in range(MAX_HELD + 1):
                        socket.send_fds(sock, [b" "], [write_end])
                    return sock.recv(10)  # closed by formd: end of stream
                except (BrokenPipeError, ConnectionResetError):
                    return b""

        assert await trio.to_thread.run_sync(flood) == b""
        os.close(write_end)
        await trio.sleep(0.1)
        assert writer_closed_everywhere(read_end)  # every file it had received was closed
        with Connection(path) as connection:  # and the server still serves
            assert await trio.to_thread.run_sync(connection.call, "echo", {"ok": 1}) == {"ok": 1}
        nursery.cancel_scope.cancel()
    os.close(read_end)


def test_files_belong_to_the_line_holding_the_last_byte_read_with_them():
    files = LineFiles()
    files.arrived(9, [100])  # read with bytes 0..9: the line ending at 9 or later
    files.arrived(30, [101, 102])
    assert files.take(4) == []
    assert files.take(12) == [100]
    assert files.take(30) == [101, 102]
    assert files.take(40) == []
