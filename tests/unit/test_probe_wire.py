"""The probe payloads (daemon/cluster/probe_wire.py, pure): round trips and refusals."""

from __future__ import annotations

import pytest

from daemon.cluster.probe_wire import (
    Ping,
    PingRequest,
    ProbeError,
    decode_probe,
    encode_ack,
    encode_ping,
    encode_ping_request,
    is_ack_from,
    is_probe,
)
from daemon.cluster.wire import NACK

PEERS = [bytes([n]) * 32 for n in range(1, 9)]


def test_probe_payloads_round_trip():
    target = PEERS[0]
    assert decode_probe(encode_ping(target)) == Ping(target)
    assert decode_probe(encode_ping_request(target, "10.0.0.1:7946")) == PingRequest(target, "10.0.0.1:7946")
    assert decode_probe(encode_ping_request(target, "[::1]:7946")) == PingRequest(target, "[::1]:7946")
    assert is_probe(encode_ping(target)) and is_probe(encode_ping_request(target, "h:1"))
    assert not is_probe(b"\x90") and not is_probe(b"\xc0x") and not is_probe(b"\xc1x") and not is_probe(b"")
    assert is_ack_from(encode_ack(target), target)
    assert not is_ack_from(encode_ack(PEERS[1]), target) and not is_ack_from(NACK, target)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\xc2", "ping of 1 bytes"),
        (b"\xc2" + b"x" * 31, "ping of 32 bytes"),
        (b"\xc2" + b"x" * 33, "ping of 34 bytes"),
        (b"\xc3" + b"x" * 32, "does not hold"),
        (b"\xc3" + b"x" * 32 + b"a" * 400, "does not hold"),
        (b"\xc3" + b"x" * 32 + b"no-port", "not host:port"),
        (b"\xc3" + b"x" * 32 + b"\xff\xfe:1", "not host:port"),
        (b"\xc3" + b"x" * 32 + b"::1:80", "not host:port"),
        (b"\xc4" + b"x" * 32, "not a probe"),
    ],
)
def test_malformed_probe_payloads_are_refused_with_a_reason(payload, fragment):
    with pytest.raises(ProbeError, match=fragment):
        decode_probe(payload)
