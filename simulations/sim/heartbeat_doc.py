"""Document size under heartbeats alone, for many simulated hours (`--doc-hours`).

A network simulation of 100 nodes costs tens of real seconds per simulated second (see the
README), so 24 simulated hours of it are out of reach. What makes the document grow is the
sequence of writes it stores, and that part is simulated exactly:

- each of `nodes` writers holds its own key and ClusterDocument and writes its node record
  the way Node.publish does (same fields, same capabilities and capacity as a simulated node,
  heartbeat + 1, updated_ms = the simulated wall clock), signed (NodeRecord.seal) and written
  with the real ClusterDocument.put_local, when formd's tick would write it: on a tick where
  daemon/record_refresh.record_due says the refresh is due (every refresh_interval(n) of
  daemon/cluster/membership.py; capacity does not change here), starting at a random phase of the
  interval as Node.run does; `refresh_s` overrides the interval (the tick: the old rule);
- every tick the writers due write in a freshly shuffled order (seeded), and an observer
  applies each resulting update to its document in that order, as a peer receives them;
- the observer is a plain pycrdt Doc with the document's four maps: the bytes it stores are
  those ClusterDocument.apply_remote stores after its checks (which decide *whether* to
  apply, not *what*); the checks are left out for speed.

Not simulated here: jobs, runs, suspicions (none in a healthy cluster), restarts (a restart
adds a client id), lost updates.
"""

from __future__ import annotations

import random
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycrdt import Doc, Map

from crdt_state.document import MAP_NAMES
from daemon.cluster.membership import MembershipConfig
from daemon.cluster.record_refresh import record_due
from daemon.identity import Identity

from .record_writer import RecordWriter
from .world import address_of

GOAL_BYTES = 1024 * 1024


def writer(index: int, rng: random.Random) -> RecordWriter:
    identity = Identity.from_private_key(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))
    return RecordWriter(identity, address_of(index), rng.getrandbits(32) | 1)


def heartbeat_growth(
    nodes: int,
    hours: float,
    seed: int,
    tick_s: float = 1.0,
    samples: int = 48,
    refresh_s: float | None = None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    writers = [writer(i, rng) for i in range(nodes)]
    refresh = (
        refresh_s
        if refresh_s is not None
        else MembershipConfig(heartbeat_interval=tick_s).refresh_interval(nodes)
    )
    last_write = [-rng.random() * refresh for _ in writers]  # Node.run spreads the first refreshes
    observer = Doc({name: Map() for name in MAP_NAMES})
    ticks = max(1, int(hours * 3600 / tick_s))
    every = max(1, ticks // samples)
    series = []
    writes = 0
    started = time.perf_counter()
    for tick in range(1, ticks + 1):
        now = tick * tick_s
        order = list(range(nodes))
        rng.shuffle(order)
        for index in order:
            if not record_due(now, last_write[index], refresh, False, min_gap=5 * tick_s):
                continue
            last_write[index] = now
            writes += 1
            for update in writers[index].beat(now):
                observer.apply_update(update)
        if tick % every == 0 or tick == ticks:
            series.append([round(tick * tick_s / 3600, 4), len(observer.get_update())])
    real = time.perf_counter() - started
    final = series[-1][1]
    return {
        "nodes": nodes,
        "hours": hours,
        "tick_s": tick_s,
        "refresh_s": round(refresh, 4),
        "refresh_rule": "formd's refresh_interval(n)" if refresh_s is None else "given",
        "size_bytes_final": final,
        "goal_bytes": GOAL_BYTES,
        "within_goal": final <= GOAL_BYTES,
        "size_bytes_series_hours": series,
        "writes": writes,
        "method": "real signed node records written with ClusterDocument.put_local by each writer when "
        "record_due says so; the observer applies the updates (shuffled order per tick) to a plain pycrdt Doc",
        "real_s": real,  # moved to `cost` by the caller
    }
