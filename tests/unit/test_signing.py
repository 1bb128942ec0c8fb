"""Signed envelopes: what verifies, and that every kind of damage is a RecordError."""

from __future__ import annotations

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_state.signing import MAX_RECORD, RecordError, node_id_of, open_record, raw_public_key, seal_record

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
BODY = {"job": "abc", "n": 3, "blob": b"\x00\x01", "nested": {"a": [1, 2]}}


def test_seal_then_open_returns_signer_and_body():
    envelope = seal_record(KEY, "job", BODY)
    signer, body = open_record(envelope, "job")
    assert signer == node_id_of(raw_public_key(KEY))
    assert len(signer) == 32
    assert body == BODY


def test_node_id_is_blake3_of_raw_public_key():
    import blake3

    public = raw_public_key(KEY)
    assert node_id_of(public) == blake3.blake3(public).digest()
    with pytest.raises(RecordError):
        node_id_of(public[:31])


def test_a_record_cannot_be_opened_as_another_kind():
    envelope = seal_record(KEY, "cancel", BODY)
    with pytest.raises(RecordError, match="expected a 'job' record"):
        open_record(envelope, "job")


def test_relabelled_kind_does_not_verify():
    # Same body and signature, kind field rewritten: the kind is inside the signed message.
    version, _kind, public, body, signature = msgpack.unpackb(seal_record(KEY, "cancel", BODY))
    forged = msgpack.packb([version, "job", public, body, signature], use_bin_type=True)
    with pytest.raises(RecordError, match="signature"):
        open_record(forged, "job")


def test_other_key_substituted_does_not_verify():
    version, kind, _public, body, signature = msgpack.unpackb(seal_record(KEY, "job", BODY))
    other = raw_public_key(Ed25519PrivateKey.generate())
    forged = msgpack.packb([version, kind, other, body, signature], use_bin_type=True)
    with pytest.raises(RecordError, match="signature"):
        open_record(forged, "job")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_rejected(data):
    envelope = seal_record(KEY, "job", BODY)
    index = data.draw(st.integers(0, len(envelope) - 1))
    delta = data.draw(st.integers(1, 255))
    damaged = bytearray(envelope)
    damaged[index] = (damaged[index] + delta) % 256
    with pytest.raises(RecordError):
        open_record(bytes(damaged), "job")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_record_error_never_a_crash(garbage):
    with pytest.raises(RecordError):
        open_record(garbage, "node")


@pytest.mark.parametrize(
    "envelope, reason",
    [
        (msgpack.packb([1, "job"]), "5-item"),
        (msgpack.packb({"v": 1}), "5-item"),
        (msgpack.packb([2, "job", b"k" * 32, b"", b"s" * 64]), "version"),
        (msgpack.packb([True, "job", b"k" * 32, b"", b"s" * 64]), "version"),
        (msgpack.packb([1, "job", b"k" * 31, b"", b"s" * 64]), "public key"),
        (msgpack.packb([1, "job", b"k" * 32, "text", b"s" * 64]), "body must be bytes"),
        (msgpack.packb([1, "job", b"k" * 32, b"", b"s" * 63]), "signature must be 64"),
        (msgpack.packb([1, "job", b"k" * 32, b"", b"s" * 64]) + b"\x00", "msgpack"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "extension"),
        (b"x" * (MAX_RECORD + 1), "limit"),
        ("not bytes", "bytes"),
    ],
)
def test_malformed_envelopes_say_why(envelope, reason):
    with pytest.raises(RecordError, match=reason):
        open_record(envelope, "job")


def _sign_raw(body_bytes: bytes, kind: str = "job") -> bytes:
    signature = KEY.sign(b"formnet record v1\x00" + kind.encode() + b"\x00" + body_bytes)
    return msgpack.packb([1, kind, raw_public_key(KEY), body_bytes, signature], use_bin_type=True)


@pytest.mark.parametrize(
    "body_bytes, reason",
    [
        (msgpack.packb([1, 2]), "map with text keys"),
        (msgpack.packb({1: 2}), "map key"),
        (msgpack.packb({b"k": 2}), "map with text keys"),
        (msgpack.packb({"t": msgpack.ExtType(1, b"x")}), "extension"),
        (b"\xc1", "msgpack"),
    ],
)
def test_correctly_signed_but_malformed_bodies_are_rejected(body_bytes, reason):
    with pytest.raises(RecordError, match=reason):
        open_record(_sign_raw(body_bytes), "job")


def test_signature_without_the_domain_prefix_does_not_verify():
    body_bytes = msgpack.packb(BODY, use_bin_type=True)
    signature = KEY.sign(body_bytes)
    envelope = msgpack.packb([1, "job", raw_public_key(KEY), body_bytes, signature], use_bin_type=True)
    with pytest.raises(RecordError, match="signature"):
        open_record(envelope, "job")


def test_seal_refuses_unknown_kind_non_dict_and_oversize():
    with pytest.raises(RecordError, match="kind"):
        seal_record(KEY, "gossip", {})
    with pytest.raises(RecordError, match="dict"):
        seal_record(KEY, "job", [1, 2])
    with pytest.raises(RecordError, match="limit"):
        seal_record(KEY, "job", {"big": b"x" * MAX_RECORD})


def test_a_signature_is_checked_once_per_envelope_and_forgeries_still_fail(monkeypatch):
    import crdt_state.signing as signing

    other = Ed25519PrivateKey.generate()
    envelope = seal_record(other, "job", BODY)
    signing._verified.clear()  # as if it came from a peer
    loads = []
    real_load = signing.Ed25519PublicKey.from_public_bytes

    class CountingKey:
        @staticmethod
        def from_public_bytes(data):
            loads.append(data)
            return real_load(data)

    monkeypatch.setattr(signing, "Ed25519PublicKey", CountingKey)
    assert open_record(envelope, "job") == open_record(envelope, "job")
    assert len(loads) == 1
    version, kind, public, body, signature = msgpack.unpackb(envelope)
    forged = msgpack.packb(
        [version, kind, public, msgpack.packb({"job": "evil"}), signature], use_bin_type=True
    )
    with pytest.raises(RecordError, match="signature"):
        open_record(forged, "job")
    with pytest.raises(RecordError, match="signature"):
        open_record(forged, "job")  # a failure is never remembered as verified
    own = seal_record(KEY, "job", BODY)
    loads.clear()
    assert open_record(own, "job")[1] == BODY and loads == []  # sealed here: known good


def test_the_verified_cache_is_bounded(monkeypatch):
    import crdt_state.signing as signing

    monkeypatch.setattr(signing, "VERIFIED_CACHE", 3)
    for n in range(5):
        open_record(seal_record(KEY, "job", {"n": n}), "job")
    assert len(signing._verified) == 3
