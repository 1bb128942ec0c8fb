"""The HTTPS API: JSON resources under /v1/ over the same method table as the control socket.

An ASGI application served by hypercorn on trio (daemon/control/http_server.py). Every /v1/
request is signed by a client key (daemon/control/request_signing.py) that the document grants
a role (daemon/control/access.py); the method it maps to runs with that caller, so ownership
and quotas are checked where the method is. Resources:

    GET    /v1/nodes                       nodes
    GET    /v1/status                      this node
    GET    /v1/images                      images
    GET    /v1/jobs[?state=S]              job.list
    POST   /v1/jobs                        job.submit (JSON body: the job.submit params)
    GET    /v1/jobs/{id}                   job.status
    GET    /v1/jobs/{id}/explain           job.explain
    POST   /v1/jobs/{id}/cancel            job.cancel
    GET    /v1/jobs/{id}/outputs           job.files (outputs; fetched to this node first)
    GET    /v1/jobs/{id}/logs[?offset=N&follow=1]   the log as a byte stream, followed live
    PUT    /v1/blobs/{digest}?size=N[&offset=M]   upload a blob as the request body (streamed);
                                           the reply's offset says where to resume
    GET    /v1/blobs/{digest}[?offset=N]   download a blob (streamed)
    GET    /v1/acl | POST /v1/acl | DELETE /v1/acl/{key}      acl.list / acl.grant / acl.revoke
    PUT    /v1/labels | DELETE /v1/labels/{key}               label.set / label.remove
    POST   /v1/call/{method}               any control method with a JSON params body (what
                                           `form --remote` uses, so every command works remotely)
    GET    /metrics                        Prometheus text; no key needed from metrics_allow

Errors are {"error": "..."} with 400 (bad request), 401 (no or unknown key, bad signature,
replay), 403 (role), 404 (no such resource), 413 (body too large), 500 (a bug; logged).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import parse_qs, unquote

import trio

from daemon.control.access import Caller, Forbidden, authorize, current_caller
from daemon.control.protocol import ProtocolError, decode_object
from daemon.control.request_signing import STREAM, AuthError, ReplayGuard, body_digest, verify_request
from daemon.control.server import ControlError, Handler, TakesFile, WithFile
from daemon.control.tokens import TokenError
from daemon.log import EventLog

MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 16 * 1024 * 1024
BLOB_PIECE = 512 * 1024
FOLLOW_POLL_S = 0.5
_DIGEST = re.compile(r"[0-9a-f]{64}")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    target: str  # path with its query, as signed
    query: Mapping[str, str]
    headers: Mapping[str, str]
    client_host: str


def decode_json_body(data: bytes) -> dict[str, Any]:
    """The params object of a request body; an empty body is no params. Too deep, not UTF-8, not
    JSON or not an object: a 400 saying which (the control socket's own decoder)."""
    if not data.strip():
        return {}
    try:
        return decode_object(data, "body")
    except ProtocolError as exc:
        raise HttpError(400, str(exc)) from None


class HttpApi:
    """The ASGI application. `grant_of(key)` gives the caller a client key acts as (None when
    the document grants it nothing); `metrics()` gives the Prometheus text."""

    def __init__(
        self,
        methods: Mapping[str, Handler],
        grant_of: Callable[[str], Caller | None],
        log: EventLog,
        *,
        metrics: Callable[[], Awaitable[bytes]] | None = None,
        metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
        pages: Mapping[str, tuple[str, bytes]] | None = None,
        token_caller: Callable[[str], Caller] | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.methods = dict(methods)
        self.grant_of = grant_of
        self.log = log
        self.metrics = metrics
        self.metrics_allow = tuple(ipaddress.ip_network(n, strict=False) for n in metrics_allow)
        self.pages = dict(pages or {})
        self.token_caller = token_caller
        self.now_ms = now_ms
        self.replay = ReplayGuard()
        self.requests = 0
        self.refused = 0
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[None]]]] = [
            ("GET", re.compile(r"/v1/nodes"), self._simple("nodes")),
            ("GET", re.compile(r"/v1/status"), self._simple("status")),
            ("GET", re.compile(r"/v1/images"), self._simple("images")),
            ("GET", re.compile(r"/v1/jobs"), self._list_jobs),
            ("POST", re.compile(r"/v1/jobs"), self._with_body("job.submit")),
            ("GET", re.compile(r"/v1/jobs/(?P<job>[0-9a-f]{8,64})"), self._job("job.status")),
            ("GET", re.compile(r"/v1/jobs/(?P<job>[0-9a-f]{8,64})/explain"), self._job("job.explain")),
            ("POST", re.compile(r"/v1/jobs/(?P<job>[0-9a-f]{8,64})/cancel"), self._job("job.cancel")),
            (
                "GET",
                re.compile(r"/v1/jobs/(?P<job>[0-9a-f]{8,64})/outputs"),
                self._job("job.files", which="outputs"),
            ),
            ("GET", re.compile(r"/v1/jobs/(?P<job>[0-9a-f]{8,64})/logs"), self._logs),
            ("PUT", re.compile(r"/v1/blobs/(?P<digest>[0-9a-f]{64})"), self._blob_put),
            ("GET", re.compile(r"/v1/blobs/(?P<digest>[0-9a-f]{64})"), self._blob_get),
            ("GET", re.compile(r"/v1/acl"), self._simple("acl.list")),
            ("POST", re.compile(r"/v1/acl"), self._with_body("acl.grant")),
            ("DELETE", re.compile(r"/v1/acl/(?P<key>[0-9a-f]{64})"), self._acl_revoke),
            ("PUT", re.compile(r"/v1/labels"), self._with_body("label.set")),
            ("DELETE", re.compile(r"/v1/labels/(?P<key>[^/]{1,253})"), self._label_remove),
            ("POST", re.compile(r"/v1/call/(?P<name>[a-z][a-z0-9.-]{0,63})"), self._call_any),
        ]

    # ---- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.requests += 1
        request = _request(scope)
        try:
            await self._serve(request, receive, send)
        except HttpError as exc:
            self.refused += 1
            await _send_json(send, exc.status, {"error": str(exc)})
        except Exception as exc:  # a bug must not take the daemon down
            self.log.error("http request failed", path=request.path, error=f"{type(exc).__name__}: {exc}")
            await _send_json(send, 500, {"error": f"internal error: {type(exc).__name__}"})

    async def _serve(self, request: Request, receive: Callable, send: Callable) -> None:
        if request.path == "/metrics" and request.method == "GET":
            await self._serve_metrics(request, receive, send)
            return
        if request.method == "GET" and request.path in self.pages:
            content_type, body = self.pages[request.path]
            await _send(send, 200, body, content_type)
            return
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                await handler(request, receive, send, **match.groupdict())
                return
        if any(pattern.fullmatch(request.path) for _, pattern, _ in self._routes):
            raise HttpError(405, f"{request.method} is not allowed on {request.path}")
        raise HttpError(404, f"no resource {request.path[:200]}")

    # ---- authentication -----------------------------------------------------------------------

    def _authenticate(self, request: Request, digest: str) -> Caller:
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer ") and self.token_caller is not None:
            try:
                return self.token_caller(bearer[len("Bearer ") :].strip())
            except TokenError as exc:
                raise HttpError(401, str(exc)) from None
        try:
            key = verify_request(
                request.headers, request.method, request.target, digest, self.now_ms(), self.replay
            )
        except AuthError as exc:
            raise HttpError(401, str(exc)) from None
        caller = self.grant_of(key)
        if caller is None:
            raise HttpError(
                401, f"unknown client key {key[:16]}…: an admin grants it with `form acl grant {key}`"
            )
        return caller

    async def _call(self, caller: Caller, name: str, params: dict[str, Any]) -> Any:
        handler = self.methods.get(name)
        if handler is None:
            raise HttpError(404, f"unknown method {name!r}")
        if isinstance(handler, TakesFile) or params.get("as_file"):
            raise HttpError(400, f"{name} with open files works on the local control socket only")
        try:
            authorize(caller, name)
        except Forbidden as exc:
            raise HttpError(403, str(exc)) from None
        token = current_caller.set(caller)
        try:
            result = await handler(params)
            if isinstance(result, WithFile):  # an open file cannot cross HTTP
                os.close(result.fd)
                raise HttpError(400, f"{name} answers with an open file: local control socket only")
            return result
        except Forbidden as exc:
            raise HttpError(403, str(exc)) from None
        except ControlError as exc:
            raise HttpError(404 if str(exc).startswith("no job ") else 400, str(exc)) from None
        finally:
            current_caller.reset(token)

    async def _json_request(self, request: Request, receive: Callable) -> tuple[Caller, dict[str, Any]]:
        body = await _read_body(receive, MAX_BODY)
        caller = self._authenticate(request, body_digest(body))
        return caller, decode_json_body(body)

    # ---- resources ----------------------------------------------------------------------------

    def _simple(self, name: str) -> Callable[..., Awaitable[None]]:
        async def serve(request: Request, receive: Callable, send: Callable) -> None:
            caller, _ = await self._json_request(request, receive)
            await _send_json(send, 200, await self._call(caller, name, {}))

        return serve

    def _with_body(self, name: str) -> Callable[..., Awaitable[None]]:
        async def serve(request: Request, receive: Callable, send: Callable) -> None:
            caller, params = await self._json_request(request, receive)
            await _send_json(send, 200, await self._call(caller, name, params))

        return serve

    def _job(self, name: str, **extra: Any) -> Callable[..., Awaitable[None]]:
        async def serve(request: Request, receive: Callable, send: Callable, job: str) -> None:
            caller, _ = await self._json_request(request, receive)
            await _send_json(send, 200, await self._call(caller, name, {"job": job, **extra}))

        return serve

    async def _list_jobs(self, request: Request, receive: Callable, send: Callable) -> None:
        caller, _ = await self._json_request(request, receive)
        params = {"state": request.query["state"]} if "state" in request.query else {}
        await _send_json(send, 200, await self._call(caller, "job.list", params))

    async def _acl_revoke(self, request: Request, receive: Callable, send: Callable, key: str) -> None:
        caller, _ = await self._json_request(request, receive)
        await _send_json(send, 200, await self._call(caller, "acl.revoke", {"key": key}))

    async def _label_remove(self, request: Request, receive: Callable, send: Callable, key: str) -> None:
        caller, _ = await self._json_request(request, receive)
        await _send_json(send, 200, await self._call(caller, "label.remove", {"keys": [unquote(key)]}))

    async def _call_any(self, request: Request, receive: Callable, send: Callable, name: str) -> None:
        caller, params = await self._json_request(request, receive)
        await _send_json(send, 200, await self._call(caller, name, params))

    async def _logs(self, request: Request, receive: Callable, send: Callable, job: str) -> None:
        caller, _ = await self._json_request(request, receive)
        offset = _query_int(request.query, "offset", 0)
        follow = request.query.get("follow") in ("1", "true", "yes")
        first = await self._call(caller, "job.log", {"job": job, "offset": offset})
        await send(
            {"type": "http.response.start", "status": 200, "headers": _headers("application/octet-stream")}
        )
        chunk = first
        while True:
            data = base64.b64decode(chunk["data"])
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if chunk["done"] or (not follow and not data):
                break
            if not data:
                await trio.sleep(FOLLOW_POLL_S)
            try:
                chunk = await self._call(caller, "job.log", {"job": job, "offset": chunk["offset"]})
            except HttpError:
                break  # retired or gone while following: end the stream
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _blob_put(self, request: Request, receive: Callable, send: Callable, digest: str) -> None:
        caller = self._authenticate(request, STREAM)
        size = _query_int(request.query, "size", None)
        authorize_or_403(caller, "blob.put")
        # Where the body starts in the blob: a client resumes from the offset an earlier
        # attempt's reply named.
        offset = _query_int(request.query, "offset", 0)
        pending = bytearray()
        result: Any = None
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            pending += message.get("body", b"")
            more = message.get("more_body", False)
            while len(pending) >= BLOB_PIECE or (not more and pending):
                piece = bytes(pending[:BLOB_PIECE])
                del pending[:BLOB_PIECE]
                result = await self._call(
                    caller,
                    "blob.put",
                    {
                        "digest": digest,
                        "size": size,
                        "offset": offset,
                        "data": piece,
                    },
                )
                offset += len(piece)
        if result is None:  # an empty body: the node's answer says what it holds (and stores b"")
            result = await self._call(
                caller, "blob.put", {"digest": digest, "size": size, "offset": offset, "data": b""}
            )
        await _send_json(send, 200, result)

    async def _blob_get(self, request: Request, receive: Callable, send: Callable, digest: str) -> None:
        caller, _ = await self._json_request(request, receive)
        offset = _query_int(request.query, "offset", 0)
        first = await self._call(
            caller, "blob.read", {"digest": digest, "offset": offset, "length": BLOB_PIECE}
        )
        size = first["size"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers("application/octet-stream") + [(b"x-blob-size", str(size).encode())],
            }
        )
        chunk = first
        while True:
            data = base64.b64decode(chunk["data"])
            offset += len(data)
            done = not data or offset >= size
            await send({"type": "http.response.body", "body": data, "more_body": not done})
            if done:
                return
            chunk = await self._call(
                caller, "blob.read", {"digest": digest, "offset": offset, "length": BLOB_PIECE}
            )

    async def _serve_metrics(self, request: Request, receive: Callable, send: Callable) -> None:
        if self.metrics is None:
            raise HttpError(404, "metrics are off on this node")
        body = await _read_body(receive, MAX_BODY)
        if not self._metrics_allowed(request.client_host):
            self._authenticate(request, body_digest(body))  # any granted key may read them
        await _send(send, 200, await self.metrics(), "text/plain; version=0.0.4; charset=utf-8")

    def _metrics_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.metrics_allow)


def authorize_or_403(caller: Caller, method: str) -> None:
    try:
        authorize(caller, method)
    except Forbidden as exc:
        raise HttpError(403, str(exc)) from None


def _request(scope: dict) -> Request:
    path = scope.get("path", "")
    query_text = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or path.encode()
    target = raw_path.decode("latin-1") + (f"?{query_text}" if query_text else "")
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    client = scope.get("client") or ("", 0)
    return Request(scope.get("method", "GET"), path, target, query, headers, client[0])


def _query_int(query: Mapping[str, str], name: str, default: int | None) -> Any:
    text = query.get(name)
    if text is None:
        if default is None:
            raise HttpError(400, f"query parameter {name} is required")
        return default
    if not text.isdigit() or len(text) > 18:
        raise HttpError(400, f"query parameter {name}: expected a non-negative integer")
    return int(text)


async def _read_body(receive: Callable, limit: int) -> bytes:
    """The whole body, at most `limit` bytes. A larger one is read on (up to DRAIN_LIMIT, so
    the client gets to read the 413) and dropped."""
    body = bytearray()
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client went away")
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen <= limit:
            body += chunk
        more = message.get("more_body", False)
        if seen > limit and (not more or seen > DRAIN_LIMIT):
            raise HttpError(413, f"body over {limit} bytes")
        if not more:
            return bytes(body)


def _headers(content_type: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]


async def _send(send: Callable, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(content_type)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Callable, status: int, value: Any) -> None:
    await _send(send, status, json.dumps(value, separators=(",", ":")).encode() + b"\n", "application/json")


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
