"""Same seed, same run: the two sources of nondeterminism outside the node code.

1. Trio's scheduler. Each batch of runnable tasks runs in an order drawn from trio's own
   module-level Random (trio._core._run._r), and tasks woken by deadlines that fall at the
   same instant enter the run queue in an order that depends on object addresses (the
   deadline heap breaks ties by id()). Trio already has the cure, used by its Hypothesis
   plugin: with _ALLOW_DETERMINISTIC_SCHEDULING each batch is first sorted by task creation
   order and then shuffled by _r. We switch that on and seed _r for the run.

2. Worker threads. formd does file work (staging a job, storing outputs and logs, fsync) in
   trio.to_thread.run_sync. Under MockClock(autojump_threshold=0) the clock jumps forward
   whenever no task is runnable, also while a thread is still working, so how far simulated
   time moves during a thread depends on the machine. In the simulation these calls run
   inline instead: the file work really happens, in zero simulated time, and the thread
   hop is a checkpoint. (A real node would spend a few milliseconds there; that is not what
   the simulation measures.)

Everything else random is drawn from the run's seeded random.Random by the world.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import trio
from trio._core import _run as trio_run


async def run_inline(fn: Callable[..., Any], *args: Any, **_ignored: Any) -> Any:
    """Stands in for trio.to_thread.run_sync (its keyword options do not apply inline)."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


@contextlib.contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    saved_state = trio_run._r.getstate()
    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_to_thread = trio.to_thread.run_sync
    trio_run._r.seed(seed)
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio.to_thread.run_sync = run_inline  # type: ignore[assignment]
    try:
        yield
    finally:
        trio.to_thread.run_sync = saved_to_thread  # type: ignore[assignment]
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run._r.setstate(saved_state)
