"""The dashboard: one static page (dashboard.html) that reads the /v1/ API with a read token.

The page holds no data of its own; everything it shows comes from the same signed-or-token
API a client uses, so it can show nothing a read token could not read.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).with_name("dashboard.html")


def dashboard_pages() -> dict[str, tuple[str, bytes]]:
    return {"/": ("text/html; charset=utf-8", PAGE.read_bytes())}
