import os
import stat
import tomllib

import pytest

from crdt_state.signing import node_id_of
from daemon import config
from daemon.config import ConfigError, FormdConfig
from daemon.identity import IdentityError, bump_incarnation, create_identity, load_identity


def test_defaults_round_trip_through_toml(tmp_path):
    original = FormdConfig(
        listen="127.0.0.1:7000", seeds=("127.0.0.1:7001",), labels={"zone": 'a "b" c', "disk": "ssd"}
    ).validated()
    config.save(tmp_path, original)
    assert config.load(tmp_path) == original
    # every setting is written out, so the file documents itself
    written = tomllib.loads((tmp_path / "formd.toml").read_text())
    assert set(written) == {f for f in FormdConfig.__dataclass_fields__}


def test_missing_keys_take_defaults(tmp_path):
    (tmp_path / "formd.toml").write_text('listen = "127.0.0.1:7000"\n')
    loaded = config.load(tmp_path)
    assert loaded.gossip_interval_ms == 200 and loaded.gossip_fanout == 3
    assert loaded.anti_entropy_interval_s == 30.0
    assert loaded.socket == "formd.sock" and loaded.socket_permissions == 0o660


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('listen = "127.0.0.1:7000"\nbogus = 1\n', "unknown setting 'bogus'"),
        ('listen = "nonsense"\n', "listen"),
        ('listen = "127.0.0.1:70000"\n', "port"),
        ('listen = "0.0.0.0:7000"\n', "advertise"),
        ('listen = "127.0.0.1:7000"\ngossip_interval_ms = "fast"\n', "gossip_interval_ms"),
        ('listen = "127.0.0.1:7000"\ngossip_interval_ms = 0\n', "gossip_interval_ms"),
        ('listen = "127.0.0.1:7000"\ngossip_fanout = true\n', "gossip_fanout"),
        ('listen = "127.0.0.1:7000"\nseeds = "127.0.0.1:1"\n', "seeds"),
        ('listen = "127.0.0.1:7000"\nseeds = ["0.0.0.0:1"]\n', "seeds"),
        ('listen = "127.0.0.1:7000"\nlog_level = "loud"\n', "log_level"),
        ('listen = "127.0.0.1:7000"\npolicy = "random"\n', "policy"),
        ('listen = "127.0.0.1:7000"\nsocket_mode = "0999"\n', "socket_mode"),
        ('listen = "127.0.0.1:7000"\nexecutors = ["docker"]\n', "executors"),
        ('listen = "127.0.0.1:7000"\n[labels]\n"bad key!" = "x"\n', "labels"),
        ('listen = "127.0.0.1:7000"\ndead_mult = 1\n', "dead_mult"),
        ("listen = [unclosed\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(tmp_path, text, fragment):
    (tmp_path / "formd.toml").write_text(text)
    with pytest.raises(ConfigError, match=None) as caught:
        config.load(tmp_path)
    assert fragment in str(caught.value)


def test_missing_file_says_run_init(tmp_path):
    with pytest.raises(ConfigError, match="formd init"):
        config.load(tmp_path)


def test_identity_is_created_once_with_mode_0600(tmp_path):
    key = tmp_path / "node.key"
    identity = create_identity(key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert identity.node_id == node_id_of(identity.public_key)
    assert load_identity(key).node_id == identity.node_id
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        create_identity(key)
    assert load_identity(key).node_id == identity.node_id


def test_bad_key_files_are_refused(tmp_path):
    with pytest.raises(IdentityError, match="formd init"):
        load_identity(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="not a PEM"):
        load_identity(tmp_path / "junk.key")


def test_incarnation_only_goes_up(tmp_path):
    assert bump_incarnation(tmp_path) == 1
    assert bump_incarnation(tmp_path) == 2
    assert bump_incarnation(tmp_path, at_least=10) == 11
    (tmp_path / "incarnation").write_text("garbage")
    assert bump_incarnation(tmp_path, at_least=11) == 12
