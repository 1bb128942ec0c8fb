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
    """client id -> next clock, from the lib0 encoding pycrdt's get_state produces.

    A state vector has one entry per writer (per node start: 2000 at 1000 nodes, ~3 ms to
    decode in Python) and the same bytes are decoded again and again (every exchange decodes
    ours and theirs, and they change only when a write arrives), so recent results are kept;
    each caller gets its own copy."""
    key = bytes(state_vector)
    clocks = _decoded.get(key)
    if clocks is None:
        clocks = _decode(key)
        if len(_decoded) >= DECODED_KEPT:
            del _decoded[next(iter(_decoded))]
        _decoded[key] = clocks
    return dict(clocks)


DECODED_KEPT = 256
_decoded: dict[bytes, dict[int, int]] = {}  # oldest first


def _decode(state_vector: bytes) -> dict[int, int]:
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


# Translates every byte that ends a varint (high bit clear) to 0 and every other byte to 1.
_VARINT_ENDS = bytes.maketrans(bytes(range(256)), bytes(0 if b < 0x80 else 1 for b in range(256)))


def clock_of(state_vector: bytes, client: int) -> int:
    """The clock `state_vector` holds for `client` (0 when none), without decoding every entry.

    Decoding a whole vector in Python costs O(writers) per call, and a document holds one
    writer per node start: at 1000 nodes that was milliseconds for every update received. Here
    the client's encoding is searched for in C (bytes.find), and a match counts only where an
    entry starts: at a varint start with an even number of varints (client, clock, ...) before it.
    """
    count, start = read_varuint(state_vector, 0)
    needle = bytearray()
    _write_varuint(client, needle)
    ends: bytes | None = None
    position = state_vector.find(needle, start)
    while position != -1:
        if position == start or state_vector[position - 1] < 0x80:
            ends = ends if ends is not None else state_vector.translate(_VARINT_ENDS)
            if ends.count(0, start, position) % 2 == 0:
                return read_varuint(state_vector, position + len(needle))[0]
        position = state_vector.find(needle, position + 1)
    return 0


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
