"""The cluster keyring: files, rotation without restart, refusals that change nothing."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from daemon.transport.frames import FrameError, ReplayGuard, open_frame, seal
from daemon.transport.keyring import Keyring, KeyringError, decode_key, encode_key, generate_key, key_id_of

NOW = 1_700_000_000.0


def test_key_id_is_blake3_prefix():
    import blake3

    key = generate_key()
    assert key_id_of(key) == blake3.blake3(key).digest()[:8]
    assert Keyring(key).primary_id == key_id_of(key)


def test_key_text_round_trip_and_refusals():
    key = generate_key()
    text = encode_key(key)
    assert decode_key(text) == key
    assert decode_key(base64.b64encode(key).decode() + "\n") == key  # standard alphabet too
    with pytest.raises(KeyringError, match="32 bytes"):
        decode_key(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(KeyringError, match="not base64"):
        decode_key("this is not a key!!")
    with pytest.raises(KeyringError):
        Keyring(b"x" * 31)


def test_rotation_add_use_remove(tmp_path):
    old, new = generate_key(), generate_key()
    ring = Keyring(old)
    peer = Keyring(old)
    under_old = seal(ring, b"sealed under old", NOW)

    new_id = ring.add(new)
    assert ring.key_ids() == [key_id_of(old), new_id]
    assert ring.add(new) == new_id and len(ring) == 2  # adding twice is a no-op
    # still sealing under old: a peer that has not added the new key yet can read us
    assert open_frame(peer, seal(ring, b"a", NOW), NOW, ReplayGuard()) == b"a"

    ring.use(new_id.hex())
    assert ring.primary_id == new_id
    under_new = seal(ring, b"b", NOW)
    with pytest.raises(FrameError, match="unknown key id"):
        open_frame(peer, under_new, NOW, ReplayGuard())
    peer.add(new)
    assert open_frame(peer, under_new, NOW, ReplayGuard()) == b"b"
    # frames under the old key still open while it stays in the ring
    assert open_frame(ring, under_old, NOW, ReplayGuard()) == b"sealed under old"

    ring.remove(key_id_of(old))
    with pytest.raises(FrameError, match="unknown key id"):
        open_frame(ring, under_old, NOW, ReplayGuard())
    assert ring.key_ids() == [new_id]


def test_refused_operations_change_nothing():
    a, b = generate_key(), generate_key()
    ring = Keyring(a, [b])
    before = ring.key_ids()
    with pytest.raises(KeyringError, match="primary"):
        ring.remove(key_id_of(a))
    with pytest.raises(KeyringError, match="not in the keyring"):
        ring.use(key_id_of(generate_key()))
    with pytest.raises(KeyringError, match="not in the keyring"):
        ring.remove(key_id_of(generate_key()))
    with pytest.raises(KeyringError, match="hex"):
        ring.use("zz" * 8)
    with pytest.raises(KeyringError, match="16 hex"):
        ring.use("abcd")
    with pytest.raises(KeyringError):
        ring.add(b"short")
    assert ring.key_ids() == before and ring.primary_id == key_id_of(a)


def test_keyring_size_is_bounded():
    ring = Keyring(generate_key())
    for _ in range(15):
        ring.add(generate_key())
    with pytest.raises(KeyringError, match="at most|already holds"):
        ring.add(generate_key())
    assert len(ring) == 16


def test_save_load_round_trip_with_mode_0600(tmp_path):
    a, b = generate_key(), generate_key()
    ring = Keyring(a, [b])
    ring.use(key_id_of(b))
    path = tmp_path / "keyring"
    ring.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = Keyring.load(path)
    assert loaded.key_ids() == [key_id_of(b), key_id_of(a)]
    assert [p.name for p in tmp_path.iterdir()] == ["keyring"]  # no temp file left behind
    # describe() never shows key material
    assert all(set(entry) == {"key_id", "primary"} for entry in loaded.describe())
    assert encode_key(a) not in repr(loaded.describe())


def test_single_line_cluster_key_file(tmp_path):
    key = generate_key()
    path = tmp_path / "cluster.key"
    path.write_text("# made by formd init\n\n" + encode_key(key) + "\n")
    assert Keyring.load(path).key_ids() == [key_id_of(key)]


@pytest.mark.parametrize(
    "content, reason",
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("bm90IGEga2V5\n", "line 1: cluster key must be 32 bytes"),
        (encode_key(b"k" * 32) + "\n%%%\n", "line 2"),
    ],
)
def test_bad_key_files(tmp_path, content, reason):
    path = tmp_path / "cluster.key"
    path.write_text(content)
    with pytest.raises(KeyringError, match=reason):
        Keyring.load(path)


def test_missing_key_file(tmp_path):
    with pytest.raises(KeyringError, match="does not exist"):
        Keyring.load(tmp_path / "nope")
