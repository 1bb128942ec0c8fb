"""This node's own value in the `suspicions` map (crdt_state/suspicion_record.py), and reading
the others' (pure: the node writes and gossips).

The node adds a target when its probes fail (daemon/cluster/probes.py) and drops the ones membership
no longer counts (daemon/cluster/membership.py: Membership.suspecting), so the value stays a handful
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


def names_me(targets: Mapping[bytes, Freshness], my_id: bytes, spread: Freshness) -> Freshness | None:
    """The freshness a suspicion of this node names when it counts, else None. `spread` is
    the freshness we last pushed to everyone (full retransmits); a suspicion at or past it
    counts (it names that write, a later one that may not have reached the observer, an
    earlier life's, or a made-up one). We refute by publishing past it (refutation_point),
    with full retransmits, so a suspicion is refuted once."""
    named = targets.get(my_id)
    return named if named is not None and named >= spread else None


def refutation_point(named: Freshness, my_freshness: Freshness) -> Freshness | None:
    """Where our next write must start so it is fresher than `named`: (incarnation, heartbeat)
    to continue from with the same incarnation, or None when `named` is of a later incarnation
    than ours (we must take a new one, as for an earlier life's record)."""
    if named[0] > my_freshness[0]:
        return None
    return my_freshness[0], max(my_freshness[1], named[1])


def kept(current: Mapping[bytes, Freshness], still_counting: Iterable[bytes]) -> dict[bytes, Freshness]:
    keep = set(still_counting)
    return {target: f for target, f in current.items() if target in keep}
