"""The control socket's wire format, shared by formd and the form CLI (no I/O here).

One JSON object per line each way, UTF-8, at most MAX_LINE bytes:

    request:  {"method": "nodes", "params": {...}}        params optional, an object
    reply:    {"ok": true, "result": <any JSON>}
              {"ok": false, "error": "one line saying what was wrong"}

A connection may carry any number of requests; replies come back in order.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_LINE = 1024 * 1024
_METHOD = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$")


class ProtocolError(ValueError):
    """A line that is not a well-formed request or reply; the message says why."""


def encode_request(method: str, params: dict[str, Any] | None = None) -> bytes:
    return _line({"method": method, "params": params or {}})


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    message = decode_object(line, "request")
    method = message.get("method")
    if not isinstance(method, str) or not _METHOD.match(method):
        raise ProtocolError('request: "method" must be a name such as "nodes" or "cluster-key.add"')
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError('request: "params" must be an object')
    unknown = set(message) - {"method", "params"}
    if unknown:
        raise ProtocolError(f"request: unknown field(s) {', '.join(sorted(unknown))}")
    return method, params


def encode_result(result: Any) -> bytes:
    return _line({"ok": True, "result": result})


def encode_error(error: str) -> bytes:
    return _line({"ok": False, "error": " ".join(str(error).split())})


def decode_reply(line: bytes) -> tuple[bool, Any]:
    """(True, result) or (False, error text)."""
    message = decode_object(line, "reply")
    ok = message.get("ok")
    if ok is True and "result" in message:
        return True, message["result"]
    if ok is False and isinstance(message.get("error"), str):
        return False, message["error"]
    raise ProtocolError('reply: expected {"ok": true, "result": ...} or {"ok": false, "error": "..."}')


def _line(message: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise ProtocolError("message nested too deeply to encode") from None
    try:
        data = text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate from a request's \ud800 escape: keep it escaped
        data = json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"
    if len(data) > MAX_LINE:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_LINE}-byte line limit")
    return data


def decode_object(line: bytes, what: str) -> dict[str, Any]:
    """One JSON object of at most MAX_LINE bytes (a request line, a reply line, an HTTP body)."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"{what}: longer than {MAX_LINE} bytes")
    try:
        message = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what}: not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what}: not JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError:
        raise ProtocolError(f"{what}: JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(message).__name__}")
    return message
