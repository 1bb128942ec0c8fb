"""The suspicions map: one value per observer, written only by that observer; forged or
malformed values are refused and change nothing."""

from __future__ import annotations

import pytest
from crdt_nodes import cluster, rogue_update, snapshot_view
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.records import RecordError
from crdt_state.signing import seal_record
from crdt_state.suspicion_record import MAX_SUSPECTS, parse_suspicions, suspicion_body
from daemon.cluster.suspicions import seal_suspicions, targets_of


def test_an_observer_writes_its_own_suspicions_and_everyone_reads_them():
    a, b, c = cluster()
    a.doc.put_local("suspicions", a.hex, seal_suspicions(a.key, {c.node_id: (1, 1)}))
    (update,) = a.doc.drain_local_updates()
    result = b.doc.apply_remote(update)
    assert result.accepted and result.changed == {("suspicions", a.hex)}
    assert targets_of(b.doc.get("suspicions", a.hex)) == {c.node_id: (1, 1)}


def forged(a, b, c):
    stranger = Ed25519PrivateKey.generate()
    return {
        "not that node": (("suspicions", a.hex), seal_suspicions(b.key, {c.node_id: (1, 1)})),
        "unknown node": (("suspicions", a.hex), seal_suspicions(stranger, {c.node_id: (1, 1)})),
        "expected [incarnation, heartbeat]": (
            ("suspicions", b.hex),
            seal_record(b.key, "suspicion", {"targets": {c.hex: [1]}}),
        ),
        "only 'targets'": (
            ("suspicions", b.hex),
            seal_record(b.key, "suspicion", {"targets": {}, "extra": 1}),
        ),
        "not a node id": (
            ("suspicions", b.hex),
            seal_record(b.key, "suspicion", {"targets": {"zz": [1, 1]}}),
        ),
        "expected a 'suspicion' record": (("suspicions", b.hex), seal_record(b.key, "run", {"targets": {}})),
        "signed record": (("suspicions", b.hex), "just text"),
    }


@pytest.mark.parametrize("case", list(forged(*cluster())))
def test_forged_or_malformed_suspicions_are_refused_and_change_nothing(case):
    a, b, c = cluster()
    where, value = forged(a, b, c)[case]
    before = snapshot_view(c.doc)
    result = c.doc.apply_remote(rogue_update(c.doc, {where: value}))
    assert not result.accepted
    assert case in result.reason or (case == "signed record" and "not a signed record" in result.reason), (
        result.reason
    )
    assert snapshot_view(c.doc) == before


def test_local_writes_of_bad_suspicions_are_refused():
    a, b, _ = cluster()
    with pytest.raises(RecordError):
        a.doc.put_local("suspicions", b.hex, seal_suspicions(a.key, {}))  # not our key
    with pytest.raises(RecordError):
        suspicion_body({"ab": (1, 1)})
    with pytest.raises(RecordError, match="over the"):
        parse_suspicions({"targets": {f"{n:064x}": [1, 1] for n in range(MAX_SUSPECTS + 1)}})
    assert parse_suspicions(suspicion_body({})) == {}
