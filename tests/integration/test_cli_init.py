"""`formd init` and `form` as a user runs them: real processes, exit codes, files."""

import os
import re
import stat
import tomllib

import pytest
from procs import form, formd_init

from daemon.transport.keyring import Keyring


def test_init_writes_config_identity_and_key(tmp_path):
    state = tmp_path / "state"
    result = formd_init(
        state,
        "--listen",
        "127.0.0.1:17946",
        "--seed",
        "127.0.0.1:17947",
        "--new-cluster-key",
        "--label",
        "zone=a",
        "--set",
        "gossip_interval_ms=100",
        "--set",
        "log_level=debug",
    )
    assert re.fullmatch(r"[0-9a-f]{64}", result.stdout.strip().splitlines()[-1])
    for name in ("node.key", "cluster.key"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600
    config = tomllib.loads((state / "formd.toml").read_text())
    assert config["listen"] == "127.0.0.1:17946" and config["seeds"] == ["127.0.0.1:17947"]
    assert (
        config["labels"] == {"zone": "a"}
        and config["gossip_interval_ms"] == 100
        and config["log_level"] == "debug"
    )
    assert config["socket"] == "formd.sock"
    assert len(Keyring.load(state / "cluster.key")) == 1

    # a second node joins with the first one's key file
    other = tmp_path / "other"
    formd_init(other, "--listen", "127.0.0.1:17947", "--cluster-key-file", str(state / "cluster.key"))
    assert Keyring.load(other / "cluster.key").primary_id == Keyring.load(state / "cluster.key").primary_id


def test_init_refuses_to_replace_an_identity(tmp_path):
    formd_init(tmp_path, "--listen", "127.0.0.1:17946", "--new-cluster-key")
    key = (tmp_path / "node.key").read_bytes()
    config = (tmp_path / "formd.toml").read_text()
    result = formd_init(tmp_path, "--listen", "127.0.0.1:17000", "--new-cluster-key", check=False)
    assert result.returncode == 1 and "refusing to overwrite" in result.stderr
    assert (tmp_path / "node.key").read_bytes() == key and (tmp_path / "formd.toml").read_text() == config


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--listen", "127.0.0.1:1"], "exactly one of"),
        (["--listen", "127.0.0.1:1", "--new-cluster-key", "--cluster-key-file", "x"], "exactly one of"),
        (["--listen", "nowhere", "--new-cluster-key"], "listen"),
        (["--listen", "127.0.0.1:1", "--seed", "nope", "--new-cluster-key"], "seeds"),
        (["--listen", "127.0.0.1:1", "--label", "novalue", "--new-cluster-key"], "key=value"),
        (["--listen", "127.0.0.1:1", "--set", "bogus=1", "--new-cluster-key"], "unknown setting 'bogus'"),
        (["--listen", "127.0.0.1:1", "--set", "gossip_fanout=0", "--new-cluster-key"], "gossip_fanout"),
        (["--listen", "127.0.0.1:1", "--cluster-key-file", "/nonexistent/key"], "does not exist"),
    ],
)
def test_init_refuses_bad_input_and_writes_nothing(tmp_path, args, fragment):
    state = tmp_path / "state"
    result = formd_init(state, *args, check=False)
    assert result.returncode == 1, result
    assert result.stderr.startswith("formd: ") and fragment in result.stderr, result.stderr
    assert not state.exists() or not any(state.iterdir())


def test_init_refuses_a_bad_key_file(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("this is not a key\n")
    result = formd_init(
        tmp_path / "state", "--listen", "127.0.0.1:1", "--cluster-key-file", str(bad), check=False
    )
    assert result.returncode == 1 and "base64" in result.stderr
    assert not (tmp_path / "state" / "node.key").exists()


def test_run_without_init_says_so(tmp_path):
    import subprocess

    from procs import FORMD

    result = subprocess.run(
        [*FORMD, "run", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "formd init" in result.stderr


@pytest.mark.parametrize("key", ["listen", "http_listen"])
def test_run_on_a_port_in_use_names_the_address_and_its_key(tmp_path, key):
    import socket
    import subprocess

    from procs import FORMD, free_port

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        ports = {"listen": f"127.0.0.1:{free_port()}", "http_listen": f"127.0.0.1:{free_port()}", key: busy}
        formd_init(
            tmp_path, "--listen", ports["listen"], "--http-listen", ports["http_listen"], "--new-cluster-key"
        )
        result = subprocess.run(
            [*FORMD, "run", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert result.stderr == f"formd: cannot listen on {busy} ({key}): Address already in use\n"


def test_form_without_a_daemon_fails_with_one_line(tmp_path):
    result = form(tmp_path / "formd.sock", "nodes", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("form: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_form_reads_the_socket_from_the_environment(tmp_path, monkeypatch):
    import subprocess

    from procs import FORM

    env = {**os.environ, "FORM_SOCKET": str(tmp_path / "env.sock")}
    result = subprocess.run([*FORM, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and "env.sock" in result.stderr


def test_cluster_key_generate_writes_a_usable_key(tmp_path):
    out = tmp_path / "new.key"
    result = form(tmp_path / "unused.sock", "cluster-key", "generate", "--output", str(out))
    assert result.returncode == 0 and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert len(Keyring.load(out)) == 1
    again = form(tmp_path / "unused.sock", "cluster-key", "generate", "--output", str(out), check=False)
    assert again.returncode == 1 and "refusing" in again.stderr
