"""The advertised address through the real `formd init` and `formd run` on 127.0.0.1: a wildcard
listen with a loopback seed asks for --advertise and writes nothing, an explicit --advertise is
kept, and formd run warns once when it is not one of this host's addresses."""

import json

import pytest
from procs import Formd, formd_init


def test_init_with_a_loopback_seed_and_wildcard_listen_asks_for_advertise(tmp_path):
    result = formd_init(
        tmp_path / "s",
        "--listen",
        "0.0.0.0:7946",
        "--seed",
        "127.0.0.1:7947",
        "--new-cluster-key",
        check=False,
    )
    assert result.returncode == 1
    assert "pass --advertise HOST:PORT" in result.stderr and "loopback" in result.stderr
    assert not (tmp_path / "s").exists()  # nothing written


def test_init_with_explicit_advertise_keeps_it(tmp_path):
    result = formd_init(
        tmp_path / "s",
        "--listen",
        "0.0.0.0:7946",
        "--advertise",
        "192.0.2.7:7946",
        "--seed",
        "127.0.0.1:7947",
        "--new-cluster-key",
    )
    assert "advertising 192.0.2.7:7946" in result.stdout


@pytest.mark.slow
def test_formd_run_warns_once_when_the_advertised_address_is_not_its_own(tmp_path):
    node = Formd(tmp_path / "n", "n")
    node.init(settings={"advertise": json.dumps(f"192.0.2.7:{node.port}")})
    try:
        node.start()
        log = node.log_text()
        assert log.count("advertised address is not local") == 1, log
        assert "192.0.2.7 is not an address of this host" in log
    finally:
        node.kill()
