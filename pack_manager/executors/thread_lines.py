"""Log lines from a worker thread to the trio task that writes them, in order (a thin driver).

The executors read Podman's streams and run wasmtime in threads; their lines reach the job's
log sink through one bounded channel. `send` works from any thread (wasmtime calls its output
hooks from threads of its own, hence the trio token), and drops lines once nobody listens,
so a reader keeps draining its stream to the end.
"""

from __future__ import annotations

import trio

from .base import LogSink

_GONE = (trio.Cancelled, trio.ClosedResourceError, trio.RunFinishedError, trio.BrokenResourceError)


class ThreadLines:
    def __init__(self, buffer: int = 1024) -> None:
        self._send, self._receive = trio.open_memory_channel[str](buffer)
        self._token = trio.lowlevel.current_trio_token()

    def send(self, line: str) -> None:
        """From a worker thread: hand one line over (blocks while the channel is full)."""
        try:
            trio.from_thread.run(self._send.send, line, trio_token=self._token)
        except _GONE:
            pass  # nobody is listening any more; keep draining the stream

    def close(self) -> None:
        """No more lines: `deliver` returns once it has written the ones sent."""
        self._send.close()

    async def deliver(self, log: LogSink) -> None:
        async for line in self._receive:
            await log(line)
