"""The control socket server with a real Unix socket, and the CLI's client against it."""

import json
import os
import socket
import stat

import pytest
import trio

from cli.client import ClientError, call
from daemon.control.protocol import (
    MAX_LINE,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
)
from daemon.control.server import ControlServer, param
from daemon.log import EventLog


def make_server():
    state = {"labels": {}}

    async def echo(params):
        return params

    async def set_label(params):
        key = param(params, "key", str)
        state["labels"][key] = param(params, "value", str)
        return dict(state["labels"])

    async def broken(params):
        raise RuntimeError("bug")

    return ControlServer({"echo": echo, "label.set": set_label, "broken": broken}, EventLog()), state


def raw_exchange(path, data: bytes) -> list:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return [decode_reply(line) for line in received.splitlines()]


async def test_requests_and_bad_input_over_a_real_socket(tmp_path):
    server, state = make_server()
    path = tmp_path / "c.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, 0o660)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660

        assert await trio.to_thread.run_sync(call, path, "echo", {"a": 1}) == {"a": 1}
        assert await trio.to_thread.run_sync(call, path, "label.set", {"key": "zone", "value": "a"}) == {
            "zone": "a"
        }

        lines = (
            b"this is not json\n"
            b"[1,2]\n"
            b'{"method": 5}\n'
            b'{"method": "nope"}\n'
            b'{"method": "label.set", "params": {"key": 3, "value": "x"}}\n'
            b'{"method": "label.set", "params": {"value": "x"}}\n'
            b'{"method": "label.set", "params": []}\n'
            b'{"method": "echo", "extra": 1}\n'
            b"\xff\xfe\n"
            b'{"method": "broken"}\n'
            b'{"method": "echo", "params": {"still": "serving"}}\n'
        )
        replies = await trio.to_thread.run_sync(raw_exchange, path, lines)
        assert [ok for ok, _ in replies] == [False] * 10 + [True]
        errors = [text for _, text in replies[:10]]
        assert "not JSON" in errors[0]
        assert "JSON object" in errors[1]
        assert "method" in errors[2]
        assert "unknown method 'nope'" in errors[3]
        assert "expected str" in errors[4]
        assert "missing parameter 'key'" in errors[5]
        assert "params" in errors[6]
        assert "unknown field" in errors[7]
        assert "UTF-8" in errors[8]
        assert "internal error" in errors[9]
        assert replies[10][1] == {"still": "serving"}
        assert state["labels"] == {"zone": "a"}  # nothing bad was applied

        # an over-long line gets one error; the connection resyncs at the next newline
        replies = await trio.to_thread.run_sync(
            raw_exchange, path, b"x" * (3 * MAX_LINE) + b'\n{"method": "echo", "params": {"after": 1}}\n'
        )
        assert replies == [(False, f"request longer than {MAX_LINE} bytes"), (True, {"after": 1})]
        with pytest.raises(ClientError, match="unknown method"):
            await trio.to_thread.run_sync(call, path, "nope")
        assert await trio.to_thread.run_sync(call, path, "echo") == {}
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_a_second_server_refuses_a_live_socket_but_replaces_a_stale_one(tmp_path):
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what kill -9 leaves behind
    first, _ = make_server()
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve, path, 0o600)
        second, _ = make_server()
        with pytest.raises(OSError, match="already serving"):
            await second.serve(path, 0o600)
        assert await trio.to_thread.run_sync(call, path, "echo", {"x": 1}) == {"x": 1}
        nursery.cancel_scope.cancel()


def test_client_reports_a_missing_socket(tmp_path):
    with pytest.raises(ClientError, match="does not exist"):
        call(tmp_path / "none.sock", "nodes")


def test_protocol_round_trip_and_refusals():
    assert decode_request(encode_request("cluster-key.add", {"key": "k"})) == (
        "cluster-key.add",
        {"key": "k"},
    )
    for bad in (b'{"method": "Bad Name"}', b'{"method": ""}', b"null", b'{"ok": true}'):
        with pytest.raises(ProtocolError):
            decode_request(bad)
    for bad in (b'{"ok": true}', b'{"ok": false}', b'{"ok": 1, "result": 2}'):
        with pytest.raises(ProtocolError):
            decode_reply(bad)
    assert decode_reply(json.dumps({"ok": False, "error": "why"}).encode()) == (False, "why")


def test_deep_nesting_and_lone_surrogates_are_protocol_errors_not_crashes():
    for deep in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"method": "x", "params": {"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
    ):
        with pytest.raises(ProtocolError, match="nested too deeply"):
            decode_request(deep)
    method, params = decode_request(b'{"method": "echo", "params": {"a": "\\ud800"}}')
    assert json.loads(encode_result(params)) == {"ok": True, "result": {"a": "\ud800"}}
    assert b"\\ud800" in encode_error("bad \ud800 text")


async def test_a_handler_result_that_cannot_be_encoded_is_an_error_and_the_server_goes_on(tmp_path):
    async def deep(params):
        result: list = []
        for _ in range(100_000):
            result = [result]
        return result

    server = ControlServer({"deep": deep}, EventLog())
    lines = (b'{"method": "deep"}', b"[" * 10**5)
    replies = [json.loads((await server.dispatch(line))[0]) for line in lines]
    assert [r["ok"] for r in replies] == [False, False]
    assert "nested too deeply" in replies[1]["error"]
