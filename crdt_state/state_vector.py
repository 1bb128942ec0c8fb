"""Reading and writing pycrdt state vectors (lib0 v1 encoding) without a document.

Used to tell whether a peer has changes we lack, and to compare states: the byte encoding
is not canonical (entry order varies), the decoded dict is.
"""

from __future__ import annotations


class StateVectorError(ValueError):
    """Bytes that are not a state vector."""


def read_varuint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise StateVectorError("state vector is truncated")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise StateVectorError("state vector number is too long")


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """client id -> next clock, from the lib0 encoding pycrdt's get_state produces."""
    count, offset = read_varuint(state_vector, 0)
    if count > len(state_vector):
        raise StateVectorError("state vector claims more entries than it has bytes")
    clocks: dict[int, int] = {}
    for _ in range(count):
        client, offset = read_varuint(state_vector, offset)
        clock, offset = read_varuint(state_vector, offset)
        clocks[client] = clock
    if offset != len(state_vector):
        raise StateVectorError("state vector has trailing bytes")
    return clocks


def _write_varuint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    """The lib0 encoding of client id -> next clock, as pycrdt's get_update takes it."""
    out = bytearray()
    _write_varuint(len(clocks), out)
    for client, clock in clocks.items():
        _write_varuint(client, out)
        _write_varuint(clock, out)
    return bytes(out)
