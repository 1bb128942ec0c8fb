"""Telling, without applying it, that a remote update skips clocks of one of its writers.

Such an update cannot be integrated yet: pycrdt would keep its structs pending until the
skipped ones arrive. Finding that out by applying it to the shadow document made the refusal
rebuild both copies of the document (crdt_state/document.py), which at a few hundred jobs cost
tens of milliseconds per out-of-order gossip push.

pycrdt has no call that reads an update's lowest clock per writer (Yjs's parseUpdateMeta), and
pycrdt.get_state(update) lists only the writers an update holds from clock 0. What it has is
get_update(update, state vector): the part of the update beyond that state, whose first bytes
(lib0 v1: writer count, then struct count, writer id, first clock) name one writer and where
its part starts. So we ask for the diff against our state vector with the writers already
looked at marked complete, one writer per call, until a writer starts beyond the clock we hold
(a gap) or nothing is left. Each call decodes the update, so the walk is bounded; an update
that does not decode, or has more writers than the bound, is left to the shadow check, which
also finds the gaps this does not see (an item whose origin is another writer's item we lack).
"""

from __future__ import annotations

import pycrdt

from crdt_state.state_vector import (
    StateVectorError,
    clock_of,
    decode_state_vector,
    encode_state_vector,
    read_varuint,
)

MAX_WRITERS_CHECKED = 32
_COMPLETE = 2**32 - 1  # pycrdt clocks are 32-bit: no writer goes past this


def clock_gap(update: bytes, state_vector: bytes) -> tuple[int, int, int] | None:
    """(writer, first clock in the update, clock we hold) for the first writer whose part of
    `update` starts beyond what `state_vector` (ours, as pycrdt encodes it) has; None if none
    does or this cannot tell."""
    held: dict[int, int] | None = None  # decoded only for an update of several writers
    looked_at: dict[int, int] = {}
    for _ in range(MAX_WRITERS_CHECKED):
        try:
            diff = pycrdt.get_update(
                update, encode_state_vector({**held, **looked_at}) if held is not None else state_vector
            )
            writers, offset = read_varuint(diff, 0)
            if writers == 0:
                return None  # a duplicate, the common case with epidemic push
            _structs, offset = read_varuint(diff, offset)
            writer, offset = read_varuint(diff, offset)
            first_clock, _ = read_varuint(diff, offset)
            ours = clock_of(state_vector, writer)
            if first_clock > ours:
                return writer, first_clock, ours
            if writers == 1 or writer in looked_at:
                return None
            held = held if held is not None else decode_state_vector(state_vector)
        except (ValueError, StateVectorError):
            return None  # does not decode: the shadow check says why
        looked_at[writer] = _COMPLETE
    return None
