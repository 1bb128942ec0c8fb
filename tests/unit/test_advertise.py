"""Which address `formd init` advertises when formd listens on every interface.

The routing table is this test's input: `routes` stands in for the kernel's answer to "which
local address would you send from to this target" (the real one is exercised on network
namespaces in integration/test_netns_cluster.py, `formd init` and `formd run` in
integration/test_advertise_formd.py)."""

import errno
import socket

import pytest

from daemon.advertise import advertise_problem, choose_advertise, is_local_address, kernel_route_source
from daemon.config import ConfigError


def routes(table: dict[str, str]):
    def route_source(host: str, port: int, family: int) -> str:
        local = table.get(host)
        if local is None or (family == socket.AF_INET and ":" in local):
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return local

    return route_source


def test_a_named_listen_address_is_advertised_as_it_is():
    assert choose_advertise("10.1.2.3:7946", ["10.0.0.1:7946"], routes({})) == ""
    assert choose_advertise("127.0.0.1:7946", [], routes({})) == ""


def test_wildcard_listen_advertises_the_address_routed_towards_the_first_seed():
    table = {"10.251.0.10": "10.251.0.11", "172.16.0.1": "172.16.0.9"}
    got = choose_advertise("0.0.0.0:7946", ["10.251.0.10:7000", "172.16.0.1:7946"], routes(table))
    assert got == "10.251.0.11:7946"  # the listen port, not the seed's


def test_without_seeds_the_default_route_source_is_advertised():
    assert choose_advertise("0.0.0.0:7000", [], routes({"192.0.2.1": "192.168.1.5"})) == "192.168.1.5:7000"


def test_ipv6_wildcard_prefers_an_ipv6_default_route_and_brackets_it():
    table = {"2001:db8::1": "fd00::5", "192.0.2.1": "192.168.1.5"}
    assert choose_advertise("[::]:7946", [], routes(table)) == "[fd00::5]:7946"
    assert choose_advertise("[::]:7946", [], routes({"192.0.2.1": "192.168.1.5"})) == "192.168.1.5:7946"


@pytest.mark.parametrize(
    "seeds, table, fragment",
    [
        ([], {}, "towards the default route (Network is unreachable)"),
        (["10.0.0.1:7946"], {}, "towards the seed 10.0.0.1:7946"),
        (["127.0.0.1:7946"], {"127.0.0.1": "127.0.0.1"}, "would use loopback 127.0.0.1"),
        ([], {"192.0.2.1": "127.0.1.1"}, "would use loopback 127.0.1.1"),
    ],
)
def test_no_routable_address_asks_for_advertise(seeds, table, fragment):
    with pytest.raises(ConfigError) as caught:
        choose_advertise("0.0.0.0:7946", seeds, routes(table))
    assert fragment in str(caught.value) and "pass --advertise HOST:PORT" in str(caught.value)


def test_an_ipv4_wildcard_takes_no_ipv6_route():
    with pytest.raises(ConfigError, match="towards the seed"):
        choose_advertise("0.0.0.0:7946", ["[fd00::1]:7946"], routes({"fd00::1": "fd00::5"}))
    assert (
        choose_advertise("[::]:7946", ["[fd00::1]:7946"], routes({"fd00::1": "fd00::5"})) == "[fd00::5]:7946"
    )


def test_the_kernel_answers_for_loopback_without_sending():
    assert kernel_route_source("127.0.0.1", 9) == "127.0.0.1"
    assert kernel_route_source("localhost", 9, socket.AF_INET) == "127.0.0.1"


def test_an_advertised_address_this_host_does_not_own_is_a_problem():
    assert advertise_problem("127.0.0.1:7946", is_local_address) is None
    problem = advertise_problem("192.0.2.77:7946", is_local_address)
    assert problem is not None and "not an address of this host" in problem
