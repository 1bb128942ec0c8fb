"""A progress bar for large uploads and downloads, shown only to a person at a terminal.

The bar goes to stderr and appears when the transfer is at least SHOW_FROM bytes, stdout and
stderr are both terminals, and the command does not print JSON: piped or scripted output stays
exactly what it was.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

SHOW_FROM = 4 * 1024 * 1024

Advance = Callable[[int], None]


def wanted(size: int, as_json: bool) -> bool:
    return size >= SHOW_FROM and not as_json and sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def transfer_bar(description: str, size: int, *, as_json: bool = False) -> Iterator[Advance]:
    """Yields `advance(bytes)`; draws a rich bar while the block runs when `wanted`."""
    if not wanted(size, as_json):
        yield lambda _count: None
        return
    from rich.console import Console  # noqa: PLC0415 (rich loads slowly; only for a bar)
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=size)
        yield lambda count: bar.advance(task, count)
