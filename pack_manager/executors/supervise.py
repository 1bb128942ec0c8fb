"""Run a job's body under its deadline and cancel event, and say which one ended it."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio

from .base import CANCELLED, SUCCEEDED, TIMED_OUT


async def supervise(body: Callable[[], Awaitable[Any]], timeout_s: float, cancel: trio.Event) -> str:
    """SUCCEEDED when body ran to its end (whatever the job's exit code), TIMED_OUT when the
    deadline cut it short, CANCELLED when the cancel event did. The caller then stops and
    cleans up what body started; body itself is just cancelled."""
    outcome = SUCCEEDED
    scope = trio.CancelScope(deadline=trio.current_time() + timeout_s)

    async def watch_cancel() -> None:
        nonlocal outcome
        await cancel.wait()
        outcome = CANCELLED
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_cancel)
        with scope:
            await body()
        if outcome == SUCCEEDED and scope.cancelled_caught:
            outcome = TIMED_OUT
        nursery.cancel_scope.cancel()
    return outcome
