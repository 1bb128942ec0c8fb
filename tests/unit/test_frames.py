"""Sealed frames: round trip, and every kind of bad frame refused with its reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.transport.frames import (
    HEADER_BYTES,
    OVERHEAD,
    FrameError,
    ReplayGuard,
    check_frame_size,
    open_frame,
    seal,
)
from daemon.transport.keyring import Keyring

NOW = 1_700_000_000.0


@pytest.fixture
def ring():
    return Keyring.generate()


def refused(ring, frame, now=NOW, guard=None, **kw) -> str:
    with pytest.raises(FrameError) as info:
        open_frame(ring, frame, now, guard or ReplayGuard(), **kw)
    return str(info.value)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=4096), skew=st.floats(-59.0, 59.0))
def test_seal_open_round_trip(payload, skew):
    ring = Keyring.generate()
    frame = seal(ring, payload, NOW)
    assert len(frame) == OVERHEAD + len(payload)
    assert open_frame(ring, frame, NOW + skew, ReplayGuard()) == payload


def test_ciphertext_hides_the_payload(ring):
    payload = b"secret capacity figures " * 4
    frame = seal(ring, payload, NOW)
    assert payload not in frame and b"secret" not in frame


@settings(max_examples=50, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_garbage_is_refused(garbage):
    ring = Keyring.generate()
    with pytest.raises(FrameError):
        open_frame(ring, garbage, NOW, ReplayGuard())


def test_truncated_frame(ring):
    frame = seal(ring, b"hello", NOW)
    assert refused(ring, frame[:10]).startswith("truncated frame (10 bytes")
    # Cut inside the ciphertext: long enough to parse, no longer authentic.
    assert refused(ring, frame[:-3]) == "authentication failed"


def test_wrong_key(ring):
    other = Keyring.generate()
    frame = seal(other, b"hello", NOW)
    reason = refused(ring, frame)
    assert reason.startswith("unknown key id ") and other.primary_id.hex()[:8] in reason


def test_same_key_id_but_tampered_ciphertext(ring):
    frame = bytearray(seal(ring, b"hello world", NOW))
    frame[-1] ^= 1
    assert refused(ring, bytes(frame)) == "authentication failed"


@pytest.mark.parametrize("position", range(HEADER_BYTES))
def test_tampered_header(ring, position):
    frame = bytearray(seal(ring, b"hello", NOW))
    frame[position] ^= 0x40
    reason = refused(ring, bytes(frame))
    if position == 0:
        assert reason.startswith("unsupported frame version")
    elif position <= 8:
        assert reason.startswith("unknown key id")
    else:  # the nonce: bound to the ciphertext as associated data
        assert reason == "authentication failed"


def test_replayed_frame(ring):
    guard = ReplayGuard()
    frame = seal(ring, b"hello", NOW)
    assert open_frame(ring, frame, NOW, guard) == b"hello"
    assert refused(ring, frame, now=NOW + 1, guard=guard) == "replayed frame"
    # a different frame with the same payload is fine
    assert open_frame(ring, seal(ring, b"hello", NOW), NOW + 1, guard) == b"hello"


def test_stale_and_future_timestamps(ring):
    frame = seal(ring, b"x", NOW - 412)
    assert refused(ring, frame) == "stale timestamp 412 s old (window ±60 s)"
    frame = seal(ring, b"x", NOW + 90)
    assert refused(ring, frame) == "timestamp 90 s in the future (window ±60 s)"
    assert refused(ring, seal(ring, b"x", float("nan"))) == "frame timestamp is not a number"
    wide = ReplayGuard(window=600)
    assert open_frame(ring, seal(ring, b"x", NOW - 412), NOW, wide) == b"x"


def test_oversized_frame_and_payload(ring):
    limit = 64 * 1024
    with pytest.raises(FrameError, match="over the 64 KiB limit"):
        seal(ring, b"x" * limit, NOW, max_frame=limit)
    frame = seal(ring, b"x" * (limit - OVERHEAD), NOW, max_frame=limit)
    assert len(frame) == limit
    assert open_frame(ring, frame, NOW, ReplayGuard(), max_frame=limit) == b"x" * (limit - OVERHEAD)
    big = seal(ring, b"x" * limit, NOW, max_frame=10 * limit)
    assert refused(ring, big, max_frame=limit) == f"frame of {limit + OVERHEAD} bytes over the 64 KiB limit"
    with pytest.raises(FrameError, match=r"frame of 9 MiB over the 4 MiB limit"):
        check_frame_size(9 * 1024 * 1024)


def test_refused_frames_leave_the_replay_guard_untouched(ring):
    guard = ReplayGuard()
    refused(ring, seal(Keyring.generate(), b"x", NOW), guard=guard)
    refused(ring, seal(ring, b"x", NOW - 1000), guard=guard)
    assert len(guard) == 0


def test_replay_guard_forgets_expired_nonces():
    guard = ReplayGuard(window=60)
    for i in range(100):
        guard.check(i.to_bytes(12, "big"), NOW, NOW)
    assert len(guard) == 100
    guard.check(b"n" * 12, NOW + 61, NOW + 61)
    assert len(guard) == 1


def test_full_replay_guard_stays_bounded_and_still_refuses_replays(ring):
    guard = ReplayGuard(window=60, capacity=10)
    frames = [seal(ring, b"%d" % i, NOW + i * 0.1) for i in range(30)]
    for frame in frames:
        open_frame(ring, frame, NOW + 3, guard)
        assert len(guard) <= 10
    for frame in frames:  # every one of them, forgotten or not, is still refused
        reason = refused(ring, frame, now=NOW + 3.5, guard=guard)
        assert reason in ("replayed frame", "frame too old to tell from a replay (replay memory is full)")
    # newer genuine frames keep flowing
    assert open_frame(ring, seal(ring, b"new", NOW + 4), NOW + 4, guard) == b"new"
