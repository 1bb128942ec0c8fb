"""`--warm-start`: begin with a cluster that formed earlier, without replaying its join.

Joining 1000 nodes one by one is itself a storm (every newcomer's record is pushed to
everyone, every gap repaired with a state-vector exchange) that costs more real time to
simulate than the steady state the run wants to measure. A warm start skips it: every
machine's state dir already holds the same document, with every node's signed record
(incarnation 1, heartbeat 1, written by RecordWriter as Node.publish writes it), and its
incarnation file says 1. Each formd then starts from that document
(ClusterDocument.from_updates) and knows every peer from its first instant. Its first start
continues the process that wrote that record (world.py): incarnation 1, heartbeat counter 1,
joined (no state exchange with the seeds, which at 1000 nodes would be 3000 exchanges of
1000-writer diffs at one instant), so its first write is an ordinary refresh. A restart at a
new incarnation would be a change in shape on every node at once, pushed with full retransmits: a storm of its own
(1000 records x 16 sends per node), not the steady state.
"""

from __future__ import annotations

import random

from pycrdt import Doc, Map

from crdt_state.document import MAP_NAMES
from crdt_state.records import DIRECT, Openers

from .record_writer import RecordWriter
from .world import Machine


def formed_document(machines: list[Machine], rng: random.Random, openers: Openers = DIRECT) -> bytes:
    merged = Doc({name: Map() for name in MAP_NAMES})
    for machine in machines:
        writer = RecordWriter(machine.identity, machine.address, rng.getrandbits(32) | 1, openers)
        for update in writer.beat(0.0):
            merged.apply_update(update)
    return merged.get_update()


def warm_start(machines: list[Machine], rng: random.Random, openers: Openers = DIRECT) -> None:
    state = formed_document(machines, rng, openers)
    for machine in machines:
        machine.saved = [state]
        machine.incarnation = 1
