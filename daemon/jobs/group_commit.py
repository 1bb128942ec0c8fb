"""Group commit: writers that need their appends durable share one fsync.

A submission is acknowledged only once it is on disk. An fsync per submission serialises
every submitter behind the disk and blocks the event loop while it waits; instead each
writer appends (os.write, no fsync) and then awaits `durable()`. One fsync runs at a time in
a worker thread; whoever arrives while it runs waits for the next one, which covers every
append made before it started. Under load many acknowledgements ride on one fsync; alone, a
writer waits for exactly one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import trio


class GroupCommit:
    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._requested = 0  # tickets handed out; ticket n = "my appends are done"
        self._synced = 0  # every ticket <= this is durable
        self._running: trio.Event | None = None
        self.fsyncs = 0

    async def durable(self) -> None:
        """Return once every append made before this call is on disk (OSError if the sync fails)."""
        self._requested += 1
        ticket = self._requested
        while self._synced < ticket:
            if self._running is not None:
                await self._running.wait()
                continue
            running = self._running = trio.Event()
            covers = self._requested  # an fsync starting now covers every ticket handed out so far
            try:
                await trio.to_thread.run_sync(self._sync)
                self.fsyncs += 1
                self._synced = max(self._synced, covers)
            finally:
                self._running = None
                running.set()


def file_syncer(path: Path) -> Callable[[], None]:
    """fsync for a file another object appends to: fsync(2) flushes the file, whichever
    descriptor names it, so our own read-only descriptor serves (it stays valid when the
    file is truncated in place, as the document log is after a snapshot)."""
    fd = os.open(path, os.O_RDONLY)

    def sync() -> None:
        os.fsync(fd)

    return sync
