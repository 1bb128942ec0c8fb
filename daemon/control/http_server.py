"""Serve the HTTPS API with hypercorn on trio (the driver; the application is http_api.py)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from daemon.control.http_api import HttpApi
from daemon.control.tls import CERT_NAME, KEY_NAME
from daemon.transport.interface import listen_failure, parse_address


def listening_socket(listen: str) -> socket.socket:
    """Bound here rather than by hypercorn, whose bind error reaches formd wrapped in groups
    and without the address: this one names it and the key that set it."""
    host, port = parse_address(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise listen_failure(listen, "http_listen", exc) from None


def hypercorn_config(bind: str, state_dir: Path) -> Config:
    config = Config()
    config.bind = [bind]
    config.certfile = str(state_dir / CERT_NAME)
    config.keyfile = str(state_dir / KEY_NAME)
    config.alpn_protocols = ["http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("formd.http")  # formd's own log says what matters
    config.errorlog.setLevel(logging.CRITICAL)
    config.keep_alive_timeout = 30
    config.h11_max_incomplete_size = 64 * 1024  # request line and headers
    config.graceful_timeout = 2.0
    return config


async def serve_http(
    app: HttpApi, listen: str, state_dir: Path, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    sock = listening_socket(listen)
    # hypercorn takes the descriptor over (fd://) and closes it when it stops.
    await serve(app, hypercorn_config(f"fd://{sock.detach()}", state_dir), task_status=task_status)
