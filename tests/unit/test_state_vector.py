"""clock_of reads one writer's clock from an encoded state vector without decoding it all;
it must agree with the full decode, also when a client id's encoding appears inside other
entries (as part of a longer client id or of a clock)."""

from __future__ import annotations

import random

import pycrdt
import pytest

from crdt_state.state_vector import (
    StateVectorError,
    _write_varuint,
    clock_of,
    decode_state_vector,
    encode_state_vector,
)


def varint(value: int) -> bytes:
    out = bytearray()
    _write_varuint(value, out)
    return bytes(out)


@pytest.mark.parametrize("seed", range(20))
def test_clock_of_agrees_with_the_full_decode(seed):
    rng = random.Random(seed)
    clocks = {
        rng.getrandbits(rng.choice((7, 14, 32))): rng.getrandbits(rng.choice((7, 14, 20)))
        for _ in range(rng.randint(0, 300))
    }
    encoded = encode_state_vector(clocks)
    decoded = decode_state_vector(encoded)
    for client in list(clocks) + [rng.getrandbits(32) for _ in range(50)]:
        assert clock_of(encoded, client) == decoded.get(client, 0)


def test_a_client_id_hidden_in_other_entries_is_not_taken_for_an_entry():
    # 5's encoding is the single byte 0x05: here it is a clock, the last byte of a longer
    # client id, and the last byte of a longer clock, but never a client of its own.
    ends_in_5 = 1 | 5 << 7  # encoded 0x81 0x05
    clocks = {7: 5, ends_in_5: 9, 3: ends_in_5, 11: 1}
    encoded = encode_state_vector(clocks)
    assert encoded.count(b"\x05") == 3
    assert clock_of(encoded, 5) == 0
    assert clock_of(encoded, 7) == 5
    assert clock_of(encoded, 3) == ends_in_5
    assert clock_of(encode_state_vector({**clocks, 5: 42}), 5) == 42


def test_clock_of_reads_pycrdts_own_state_vectors():
    doc = pycrdt.Doc({"m": pycrdt.Map()})
    for client in (1, 300, 2**31 + 5):
        other = pycrdt.Doc({"m": pycrdt.Map()}, client_id=client)
        for number in range(client % 7 + 1):
            other["m"][f"k{number}"] = number
        doc.apply_update(other.get_update())
    state = doc.get_state()
    for client, clock in decode_state_vector(state).items():
        assert clock_of(state, client) == clock
    assert clock_of(state, 12345) == 0
    assert varint(300) in state  # the lookup had something to find


def test_decoding_again_gives_an_equal_copy_that_callers_may_change():
    encoded = encode_state_vector({1: 5, 300: 7, 2**31 + 5: 9})
    first = decode_state_vector(encoded)
    first[1] = 99
    del first[300]
    assert decode_state_vector(bytearray(encoded)) == {1: 5, 300: 7, 2**31 + 5: 9}
    with pytest.raises(StateVectorError):
        decode_state_vector(encoded + b"\x00")
