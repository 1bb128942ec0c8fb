"""Hostile bytes against a real formd: each is dropped with one log line, nothing is applied,
and the daemon keeps serving (its peer still sees it alive, its control socket answers)."""

import os
import socket
import struct
import time

import pycrdt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from procs import Cluster, all_see, wait_until
from tcp_frames import raw_frame

from crdt_state import sync
from crdt_state.records import NodeRecord
from crdt_state.signing import node_id_of, raw_public_key, seal_record
from daemon.cluster.gossip import pack_payload
from daemon.cluster.probe_wire import encode_ack, encode_ping
from daemon.cluster.suspicions import seal_suspicions
from daemon.identity import load_identity
from daemon.transport.interface import TransportError
from daemon.transport.keyring import Keyring
from daemon.transport.tcp import HELLO, NetTransport

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("hostile")) as cluster:
        a = cluster.add("a")
        b = cluster.add("b", seed=a)
        wait_until(lambda: all_see([a, b], [a.node_id, b.node_id]), 20, "a and b to see each other")
        yield a, b


def blast(address: str, data: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the daemon hangs up on a bad stream, possibly with a reset


def drops(node) -> list[str]:
    return [line for line in node.log_text().splitlines() if line.startswith("<4>bad frame dropped")]


def expect_one_more_drop(node, send, fragment: str) -> str:
    before = len(drops(node))
    send()
    lines = wait_until(
        lambda: len(drops(node)) > before and drops(node), 10, f"a drop line with {fragment!r}"
    )
    new = lines[before:]
    assert len(new) == 1, new
    assert fragment in new[0], new[0]
    return new[0]


def still_healthy(a, b, known_before):
    assert a.running() and b.running()
    assert sorted(a.statuses()) == sorted(known_before)
    wait_until(lambda: all_see([a, b], [a.node_id, b.node_id]), 10, "a and b still alive to each other")


def test_garbage_truncated_oversized_wrong_key_and_replayed_frames_are_dropped(pair):
    a, b = pair
    known = list(a.statuses())
    keyring = Keyring.load(a.key_file)

    expect_one_more_drop(a, lambda: blast(a.address, struct.pack(">I", 64) + os.urandom(64)), "")
    expect_one_more_drop(a, lambda: blast(a.address, struct.pack(">I", 500) + os.urandom(100)), "truncated")
    expect_one_more_drop(a, lambda: blast(a.address, b"\x00\x00"), "truncated")
    expect_one_more_drop(
        a, lambda: blast(a.address, struct.pack(">I", 512 * 1024 * 1024) + os.urandom(1000)), "limit"
    )
    expect_one_more_drop(
        a, lambda: blast(a.address, raw_frame(Keyring.generate(), HELLO, b"127.0.0.1:9")), "key"
    )
    tampered = bytearray(raw_frame(keyring, HELLO, b"127.0.0.1:9"))
    tampered[-1] ^= 1
    expect_one_more_drop(a, lambda: blast(a.address, bytes(tampered)), "")
    stale = raw_frame(keyring, HELLO, b"127.0.0.1:9", now=time.time() - 3600)
    expect_one_more_drop(a, lambda: blast(a.address, stale), "")

    # A genuine frame, recorded and played again on a new connection.
    hello = raw_frame(keyring, HELLO, b"127.0.0.1:9")
    blast(a.address, hello)
    expect_one_more_drop(a, lambda: blast(a.address, hello), "replay")

    assert a.call("status")["frames_dropped"] >= 8
    still_healthy(a, b, known)


def forged_updates() -> dict[str, bytes]:
    """Updates a key-holding but malicious peer might push, each with one bad node record.
    Each writes a key the document does not hold yet, so the bad value is the visible one."""
    attacker = Ed25519PrivateKey.generate()
    attacker_pub = raw_public_key(attacker)
    attacker_id = node_id_of(attacker_pub)
    other_id = node_id_of(raw_public_key(Ed25519PrivateKey.generate()))

    def body(node_id, public_key, address="127.0.0.1:9"):
        return NodeRecord(node_id, public_key, address, 99, 99, "alive", {}, {}, "evil", 0).to_body()

    def update(key: str, value) -> bytes:
        doc = pycrdt.Doc({"nodes": pycrdt.Map()})
        doc["nodes"][key] = value
        return doc.get_update()

    own = seal_record(attacker, "node", body(attacker_id, attacker_pub))
    forged_signature = bytearray(own)
    forged_signature[-5] ^= 0xFF
    return {
        # a valid record of the attacker, written under another node's key
        "another node's key": update(other_id.hex(), own),
        # a record that claims another node's id but carries (and is signed by) the attacker's key
        "node_id": update(
            other_id.hex(),
            seal_record(attacker, "node", {**body(attacker_id, attacker_pub), "node_id": other_id}),
        ),
        # a signature that does not verify
        "signature": update(attacker_id.hex(), bytes(forged_signature)),
        # not a signed record at all
        "not a signed record": update(attacker_id.hex(), "just text"),
    }


async def push_until_refused(transport, node, update: bytes) -> str:
    """Push one update to `node` and return the "bad update dropped" line it logs for it."""
    count = node.log_text().count("bad update dropped")
    await transport.send(node.address, pack_payload([sync.encode(sync.Update(update))]))
    for _ in range(100):
        if node.log_text().count("bad update dropped") > count:
            break
        await trio.sleep(0.05)
    return [line for line in node.log_text().splitlines() if "bad update dropped" in line][-1]


def test_valid_frames_with_forged_records_are_refused(pair):
    a, b = pair
    known = list(a.statuses())
    before = {n["id"]: (n["incarnation"], n["heartbeat"], n["version"]) for n in a.call("nodes")}
    keyring = Keyring.load(a.key_file)

    async def push_all():
        transport = NetTransport(keyring, "127.0.0.1:0")

        async def ignore(sender, payload):
            return None

        async with trio.open_nursery() as nursery:
            await nursery.start(transport.serve, ignore)
            for fragment, update in forged_updates().items():
                line = await push_until_refused(transport, a, update)
                assert fragment in line, (fragment, line)
            # And bytes that are not even a gossip payload.
            count = a.log_text().count("bad message dropped")
            await transport.send(a.address, b"\xc1garbage")
            for _ in range(100):
                if a.log_text().count("bad message dropped") > count:
                    break
                await trio.sleep(0.05)
            assert a.log_text().count("bad message dropped") == count + 1
            nursery.cancel_scope.cancel()

    trio.run(push_all)
    after = {n["id"]: n for n in a.call("nodes")}
    assert sorted(after) == sorted(before)  # no node appeared
    assert after[b.node_id]["version"] != "evil"
    assert a.call("status")["updates_refused"] >= 5
    assert "evil" not in a.log_text()
    still_healthy(a, b, known)


def test_bad_control_requests_get_errors_and_change_nothing(pair):
    a, b = pair
    for args, fragment in [
        (("label", "set", "novalue"), "not key=value"),
        (("label", "set", "bad key!=x"), "labels"),
        (("label", "remove", "nosuch"), "no such label"),
        (("cluster-key", "use", "zz"), "hex"),
        (("cluster-key", "use", "00" * 8), "not in the keyring"),
        (("cluster-key", "remove", Keyring.load(a.key_file).primary_id.hex()), "primary"),
    ]:
        result = a.form(*args, check=False)
        assert result.returncode == 1, (args, result)
        assert result.stderr.startswith("form: ") and fragment in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(a.socket))
        sock.sendall(b'\x00\xffnot json\n{"method": "nodes"}\n')
        received = b""
        while received.count(b"\n") < 2:
            received += sock.recv(65536)
    first, second = received.splitlines()[:2]
    assert b'"ok":false' in first and b'"ok":true' in second
    assert a.call("status")["labels"] == {}
    assert len(Keyring.load(a.key_file)) == 1


def test_malformed_probes_and_forged_suspicions_are_dropped(pair):
    a, b = pair
    known = list(a.statuses())
    keyring = Keyring.load(a.key_file)
    a_id, b_id = bytes.fromhex(a.node_id), bytes.fromhex(b.node_id)
    b_identity = load_identity(b.state_dir / "node.key")
    stranger = Ed25519PrivateKey.generate()

    def suspicion_update(key: str, envelope: bytes) -> bytes:
        doc = pycrdt.Doc({"suspicions": pycrdt.Map()})
        doc["suspicions"][key] = envelope
        return doc.get_update()

    async def probe_all():
        transport = NetTransport(keyring, "127.0.0.1:0")

        async def ignore(sender, payload):
            return None

        async with trio.open_nursery() as nursery:
            await nursery.start(transport.serve, ignore)
            assert await transport.request(a.address, encode_ping(a_id), 5) == encode_ack(a_id)
            for payload, reason in [
                (b"\xc2", "ping of 1 bytes"),
                (b"\xc2" + a_id + b"x", "ping of 34 bytes"),
                (b"\xc3" + b_id, "does not hold"),
                (b"\xc3" + b_id + b"not an address", "not host:port"),
            ]:
                count = a.log_text().count("bad probe dropped")
                with pytest.raises(TransportError, match=reason):
                    await transport.request(a.address, payload, 5)
                assert a.log_text().count("bad probe dropped") == count + 1
            with pytest.raises(TransportError, match="another node"):
                await transport.request(a.address, encode_ping(b_id), 5)  # a is not b: no ack
            # Suspicions of a: one signed by b under a's key, one by a node nobody knows.
            for update, fragment in [
                (
                    suspicion_update(a.node_id, seal_suspicions(b_identity.private_key, {a_id: (99, 99)})),
                    "not that node",
                ),
                (
                    suspicion_update(
                        node_id_of(raw_public_key(stranger)).hex(),
                        seal_suspicions(stranger, {b_id: (99, 99)}),
                    ),
                    "unknown node",
                ),
            ]:
                line = await push_until_refused(transport, a, update)
                assert fragment in line, (fragment, line)
            nursery.cancel_scope.cancel()

    trio.run(probe_all)
    assert a.call("status")["probes_refused"] >= 4
    assert "refuting" not in a.log_text() and "refuting" not in b.log_text()
    assert all(n["suspected_by"] == 0 for n in a.call("nodes"))
    still_healthy(a, b, known)
