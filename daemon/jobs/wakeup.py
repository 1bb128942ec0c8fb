"""What wakes the job loop before its next tick (a thin trio driver).

Made before the node and the job loop: the node sets it on every accepted change to the
document, the control API on every local submit or cancel, the loop itself when a run ends.
"""

from __future__ import annotations

import trio


class Wakeup:
    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until set or `timeout` seconds passed; then armed again for the next wait."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()
