"""This node's own value in the `suspicions` map (crdt_state/suspicion_record.py), and reading
the others' (pure: the node writes and gossips).

The node adds a target when its probes fail (daemon/probes.py) and drops the ones membership
no longer counts (daemon/membership.py: Membership.suspecting), so the value stays a handful
of entries; it writes the value again only when the set changed.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.records import SignedEntry
from crdt_state.signing import seal_record
from crdt_state.suspicion_record import Freshness, parse_suspicions, suspicion_body


def targets_of(entry: SignedEntry) -> dict[bytes, Freshness]:
    """The targets a verified suspicions entry names."""
    return parse_suspicions(entry.body)


def seal_suspicions(private_key: Ed25519PrivateKey, targets: Mapping[bytes, Freshness]) -> bytes:
    return seal_record(private_key, "suspicion", suspicion_body({t.hex(): f for t, f in targets.items()}))


def names_me(targets: Mapping[bytes, Freshness], my_id: bytes, my_freshness: Freshness) -> bool:
    """True when a suspicion of this node counts: it names our current freshness (or a later one
    of an earlier life), so we must refute by publishing the next heartbeat."""
    named = targets.get(my_id)
    return named is not None and named >= my_freshness


def kept(current: Mapping[bytes, Freshness], still_counting: Iterable[bytes]) -> dict[bytes, Freshness]:
    keep = set(still_counting)
    return {target: f for target, f in current.items() if target in keep}
