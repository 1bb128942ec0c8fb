"""One trio lock per key, made on first use and dropped once nobody holds or waits for it:
work on one blob digest (a fetch, an upload's pieces) takes turns, other digests go on."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, trio.Lock] = {}

    def busy(self, key: str) -> bool:
        """Someone holds or waits for `key`'s lock."""
        return key in self._locks

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(key, None)
