"""Node records' schema and the per-map ownership rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from crdt_nodes import FakeNode
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crdt_state.records import NodeRecord, StaleRecord, check_address, open_node_record, verify_entry
from crdt_state.signing import RecordError, seal_record

A = FakeNode.create(1)
B = FakeNode.create(2)
JOB = "ab" * 32


def test_node_record_round_trips_through_a_signed_envelope():
    record = A.record(heartbeat=7, address="[::1]:7000")
    opened = open_node_record(record.seal(A.key))
    assert opened == record
    assert opened.freshness == (1, 7)
    assert opened.capabilities == record.capabilities


def test_freshness_orders_incarnation_before_heartbeat():
    assert A.record(heartbeat=1, incarnation=2).freshness > A.record(heartbeat=999, incarnation=1).freshness


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("node_id", b"\x00" * 32, "blake3"),
        ("node_id", b"\x00" * 31, "32 bytes"),
        ("public_key", "text", "32 bytes"),
        ("address", "no-port", "host:port"),
        ("address", "host:0", "host:port"),
        ("address", "host:65536", "host:port"),
        ("address", "::1:80", "brackets"),
        ("address", 7, "text"),
        ("incarnation", -1, "integer"),
        ("incarnation", True, "integer"),
        ("heartbeat", 2**63, "integer"),
        ("heartbeat", 1.5, "integer"),
        ("status", "dead", "status"),
        ("capabilities", [1], "map"),
        ("capacity", None, "map"),
        ("version", "v" * 65, "text"),
        ("updated_ms", "now", "integer"),
    ],
)
def test_bad_node_bodies_are_rejected_with_the_field_named(field, value, reason):
    body = A.record().to_body()
    body[field] = value
    with pytest.raises(RecordError, match=reason):
        NodeRecord.from_body(body)


def test_missing_field_is_rejected():
    body = A.record().to_body()
    del body["heartbeat"]
    with pytest.raises(RecordError, match="heartbeat"):
        NodeRecord.from_body(body)


def test_to_body_refuses_a_record_no_reader_would_accept():
    with pytest.raises(RecordError):
        replace(A.record(), status="zombie").to_body()


def test_node_record_signed_by_another_key_is_rejected():
    envelope = seal_record(B.key, "node", A.record().to_body())
    with pytest.raises(RecordError, match="signed by a different node"):
        open_node_record(envelope)


def test_check_address_accepts_usual_forms():
    for address in ("127.0.0.1:7946", "node-1.example:1", "[fe80::1]:65535"):
        check_address(address)
        record = A.record(address=address)
        assert open_node_record(record.seal(A.key)).address == address  # a record may carry it


KNOWN = {A.node_id: object(), B.node_id: object()}


def test_node_entry_must_sit_under_its_own_id():
    verify_entry("nodes", A.hex, A.record().seal(A.key), KNOWN)
    with pytest.raises(RecordError, match="another node's key"):
        verify_entry("nodes", B.hex, A.record().seal(A.key), KNOWN)


def test_older_node_record_than_held_is_stale():
    held = verify_entry("nodes", A.hex, A.record(heartbeat=5).seal(A.key), KNOWN)
    verify_entry("nodes", A.hex, A.record(heartbeat=5).seal(A.key), KNOWN, held)  # same age is fine
    verify_entry("nodes", A.hex, A.record(heartbeat=0, incarnation=2).seal(A.key), KNOWN, held)
    with pytest.raises(StaleRecord):
        verify_entry("nodes", A.hex, A.record(heartbeat=4).seal(A.key), KNOWN, held)


def test_run_key_names_its_writer():
    envelope = seal_record(A.key, "run", {"state": "running"})
    entry = verify_entry("runs", f"{JOB}:{A.hex}", envelope, KNOWN)
    assert entry.signer_id == A.node_id and entry.body == {"state": "running"}
    with pytest.raises(RecordError, match="not the node it names"):
        verify_entry("runs", f"{JOB}:{B.hex}", envelope, KNOWN)


def test_jobs_and_cancels_need_a_known_signer():
    stranger = Ed25519PrivateKey.generate()
    for map_name, kind in (("jobs", "job"), ("cancels", "cancel"), ("runs", "run")):
        key = JOB if map_name != "runs" else f"{JOB}:{FakeNode(stranger, None).hex}"
        with pytest.raises(RecordError, match="unknown node"):
            verify_entry(map_name, key, seal_record(stranger, kind, {}), KNOWN)


def test_a_job_may_be_rewritten_by_any_known_node():
    # Ownership rules never depend on what a replica held before (see records.py).
    held = verify_entry("jobs", JOB, seal_record(A.key, "job", {"v": 1}), KNOWN)
    entry = verify_entry("jobs", JOB, seal_record(B.key, "job", {"v": 2}), KNOWN, held)
    assert entry.signer_id == B.node_id


def test_cancel_may_come_from_any_known_node():
    held = verify_entry("cancels", JOB, seal_record(A.key, "cancel", {}), KNOWN)
    entry = verify_entry("cancels", JOB, seal_record(B.key, "cancel", {}), KNOWN, held)
    assert entry.signer_id == B.node_id


@pytest.mark.parametrize(
    "map_name, key",
    [
        ("jobs", "AB" * 32),
        ("jobs", "ab" * 31),
        ("runs", JOB),
        ("runs", f"{JOB}:{JOB}:x"),
        ("nodes", "zz" * 32),
        ("blobs", JOB),
    ],
)
def test_malformed_keys_and_maps_are_rejected(map_name, key):
    with pytest.raises(RecordError):
        verify_entry(map_name, key, seal_record(A.key, "job", {}), KNOWN)


def test_an_envelope_of_the_wrong_kind_is_rejected_for_a_map():
    with pytest.raises(RecordError, match="expected a 'cancel' record"):
        verify_entry("cancels", JOB, seal_record(A.key, "job", {}), KNOWN)
