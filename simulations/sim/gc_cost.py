"""The garbage collector's share of a run, and keeping it small.

A 1000-node simulation holds tens of millions of long-lived objects (documents, keys, node
state); each full collection walks all of them. `freeze_survivors()` after the boot moves
what exists then to the permanent generation, which collections skip: those objects live
for the whole run anyway. `GcTimer` measures the time spent collecting (reported in `cost`).
"""

from __future__ import annotations

import gc
import time
from typing import Any


class GcTimer:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def __enter__(self) -> "GcTimer":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
        gc.unfreeze()  # a later run in this process (--sizes, --compare-policies) starts clean

    def figures(self) -> dict[str, Any]:
        return {
            "gc_s": round(self.seconds, 3),
            "gc_collections": self.collections,
            "frozen_objects": gc.get_freeze_count(),
        }


def freeze_survivors() -> None:
    gc.collect()
    gc.freeze()
