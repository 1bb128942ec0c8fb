"""Serve the HTTPS API with hypercorn on trio (the driver; the application is http_api.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from daemon.control.http_api import HttpApi
from daemon.control.tls import CERT_NAME, KEY_NAME


def hypercorn_config(listen: str, state_dir: Path) -> Config:
    config = Config()
    config.bind = [listen]
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
    await serve(app, hypercorn_config(listen, state_dir), task_status=task_status)
