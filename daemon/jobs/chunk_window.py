"""Which chunks of a blob to ask a holder for next, and which received ones to write (pure).

A fetch keeps up to `window` chunk requests outstanding so the holder always has the next
chunk to send while the last one is on the wire or being written: one round trip per
window rather than per chunk. Replies may come back in any order; a chunk is written only
when every byte before it is, so the partial file is always a prefix of the blob and a
fetch that stops can resume from its length. Requested plus received-but-unwritten chunks
never exceed `window`, which bounds memory at window x chunk bytes. A holder may send less
than asked (it serves smaller chunks, or its frames are smaller): the rest is asked again.
"""

from __future__ import annotations


class ChunkError(ValueError):
    """A reply that does not fit the request it answers."""


class ChunkWindow:
    def __init__(self, start: int, size: int, chunk: int, window: int) -> None:
        if not 0 <= start <= size or chunk <= 0 or window <= 0:
            raise ValueError("need 0 <= start <= size, chunk > 0, window > 0")
        self.size = size
        self.chunk = chunk
        self.window = window
        self.written = start  # every byte before this is written
        self._next = start  # the next offset to ask for
        self._asked: dict[int, int] = {}  # offset -> length, outstanding
        self._held: dict[int, bytes | memoryview] = {}  # offset -> data, received ahead of `written`
        self._again: list[tuple[int, int]] = []  # the rest of chunks a holder sent short

    @property
    def complete(self) -> bool:
        return self.written == self.size

    @property
    def outstanding(self) -> int:
        return len(self._asked)

    def to_ask(self) -> list[tuple[int, int]]:
        """(offset, length) requests to send now; each is then outstanding until received."""
        asks = []
        while self._again and len(self._asked) + len(self._held) < self.window:
            offset, length = self._again.pop()
            self._asked[offset] = length
            asks.append((offset, length))
        while self._next < self.size and len(self._asked) + len(self._held) < self.window:
            length = min(self.chunk, self.size - self._next)
            self._asked[self._next] = length
            asks.append((self._next, length))
            self._next += length
        return asks

    def received(self, offset: int, data: bytes | memoryview) -> None:
        length = self._asked.pop(offset, None)
        if length is None:
            raise ChunkError(f"a chunk at offset {offset} that was not asked for")
        if not data or len(data) > length:
            raise ChunkError(f"chunk at offset {offset}: {len(data)} bytes, asked for {length}")
        if len(data) < length:
            self._again.append((offset + len(data), length - len(data)))
        self._held[offset] = data

    def to_write(self) -> list[bytes | memoryview]:
        """The received chunks that continue the written prefix, in order (now written)."""
        ready = []
        while self.written in self._held:
            data = self._held.pop(self.written)
            ready.append(data)
            self.written += len(data)
        return ready
