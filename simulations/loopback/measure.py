"""Timing how long a change takes to reach every node, the same way for formd and for Serf.

One thread per observing node polls that node's own view of the cluster (formd: `nodes` on its
control socket; Serf: `members` over its RPC port) through one persistent connection, every
`interval` seconds, and notes when the view first satisfies the condition. Both systems are
measured by the same code at the same polling interval, so the figures compare.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

POLL_INTERVAL_S = 0.01


class ViewSource(Protocol):
    """One persistent connection to one node, opened by the observer thread that uses it."""

    def fetch(self) -> Any: ...

    def close(self) -> None: ...


@dataclass
class Observer:
    name: str
    open_view: Callable[[], ViewSource]
    running: Callable[[], bool]  # False once this observer was killed: it stops counting


def time_until_seen(
    observers: list[Observer],
    seen: Callable[[Any], bool],
    *,
    start: float,
    timeout: float,
    interval: float = POLL_INTERVAL_S,
    stop: threading.Event | None = None,
) -> dict[str, float | None]:
    """Seconds from `start` (a time.monotonic value) until each observer's view satisfied `seen`;
    None for an observer that never did within `timeout`. An observer that stopped running
    meanwhile (killed by the schedule) is left out: it no longer counts as a node to reach."""
    results: dict[str, float | None] = {o.name: None for o in observers}
    gone: set[str] = set()
    stop = stop or threading.Event()

    def watch(observer: Observer) -> None:
        source: ViewSource | None = None
        try:
            while not stop.is_set() and time.monotonic() - start < timeout and observer.running():
                try:
                    source = source or observer.open_view()
                    if seen(source.fetch()):
                        results[observer.name] = time.monotonic() - start
                        return
                except Exception:  # a node restarting or just killed: reconnect until it stops running
                    source = _closed(source)
                time.sleep(interval)
            if not observer.running():
                gone.add(observer.name)
        finally:
            _closed(source)

    threads = [
        threading.Thread(target=watch, args=(o,), daemon=True, name=f"watch-{o.name}") for o in observers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {name: value for name, value in results.items() if name not in gone}


def _closed(source: ViewSource | None) -> None:
    if source is not None:
        try:
            source.close()
        except OSError:
            pass
    return None


def spread(times: dict[str, float | None]) -> dict[str, Any]:
    """Per-change figures: time until 50%, 99% and 100% of the observers had seen it (None when
    fewer than that share ever did), with how many observed and how many saw it."""
    seen = sorted(t for t in times.values() if t is not None)
    total = len(times)

    def share(fraction: float) -> float | None:
        needed = max(1, math.ceil(fraction * total))
        return round(seen[needed - 1], 4) if len(seen) >= needed else None

    return {
        "p50_s": share(0.50),
        "p99_s": share(0.99),
        "all_s": share(1.0),
        "observers": total,
        "saw": len(seen),
    }


def summarise(changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Several changes -> the median of each share over the changes (the field names the simulation
    uses), the worst all_s, and every change's own figures."""

    def median_of(key: str) -> float | None:
        values = [c[key] for c in changes if c[key] is not None]
        return round(statistics.median(values), 4) if len(values) == len(changes) and values else None

    worst = [c["all_s"] for c in changes]
    return {
        "p50_s": median_of("p50_s"),
        "p99_s": median_of("p99_s"),
        "all_s": median_of("all_s"),
        "all_s_max": None if not worst or None in worst else max(worst),
        "samples": len(changes),
        "poll_interval_s": POLL_INTERVAL_S,
        "changes": changes,
    }


def ratio(formd: float | None, serf: float | None) -> float | None:
    if formd is None or serf is None or serf <= 0:
        return None
    return round(formd / serf, 2)
