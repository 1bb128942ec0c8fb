"""The address peers dial when formd listens on every interface (0.0.0.0 or ::).

A host name that resolves to itself says nothing: stock Debian maps it to 127.0.1.1, so every
node would advertise loopback and no peer could ever dial it back. The kernel's routing table
knows better: the source address it picks for a datagram to the first seed is the one that
seed (and, on a flat network, every other peer) can reach. With no seed, the default route's
source address stands in. A UDP `connect` asks the routing table without sending anything.

choose_advertise() is the pure decision over a `route_source` function (target -> local
address, or OSError when there is no route); kernel_route_source() is the real one.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable

from daemon.config import ConfigError, split_address

WILDCARDS = ("0.0.0.0", "::")
# Documentation addresses (RFC 5737, RFC 3849): never on a real network, so the route the
# kernel picks for them is the default route.
DEFAULT_ROUTE_PROBES = {"0.0.0.0": ("192.0.2.1",), "::": ("2001:db8::1", "192.0.2.1")}

# (host, port, family) -> the local address the kernel would send from; OSError when unroutable.
RouteSource = Callable[[str, int, int], str]


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def choose_advertise(listen: str, seeds: tuple[str, ...] | list[str], route_source: RouteSource) -> str:
    """ "" when `listen` names one address (peers dial that); otherwise "host:port" with the
    local address routed towards the first seed, or towards the default route without seeds.
    Raises ConfigError asking for --advertise when that address is missing or loopback."""
    host, port = split_address(listen, "listen")
    if host not in WILDCARDS:
        return ""
    # 0.0.0.0 accepts IPv4 only, so only an IPv4 route will do; :: takes either.
    family = socket.AF_INET if host == "0.0.0.0" else socket.AF_UNSPEC
    if seeds:
        seed_host, seed_port = split_address(seeds[0], "seeds")
        targets, towards = ((seed_host, seed_port),), f"the seed {seeds[0]}"
    else:
        targets, towards = tuple((t, port) for t in DEFAULT_ROUTE_PROBES[host]), "the default route"
    reasons = []
    for target in targets:
        try:
            local = route_source(*target, family)
        except OSError as exc:
            reasons.append(exc.strerror or str(exc))
            continue
        if is_loopback(local):
            reasons.append(f"the kernel would use loopback {local}")
        elif local in WILDCARDS or not local:
            reasons.append("the kernel gave no source address")
        else:
            return format_address(local, port)
    raise ConfigError(
        f"listen is {listen} and this host has no routable address towards {towards} "
        f"({'; '.join(reasons)}); pass --advertise HOST:PORT with the address peers dial"
    )


def kernel_route_source(host: str, port: int, family: int = socket.AF_UNSPEC) -> str:
    """The local address the kernel would send from to host:port (no packet leaves)."""
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    last: OSError = OSError(f"{host} does not resolve")
    for family, kind, proto, _, target in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.connect(target)
            except OSError as exc:
                last = exc
                continue
            return probe.getsockname()[0]
    raise last


def default_advertise(listen: str, seeds: tuple[str, ...] | list[str]) -> str:
    return choose_advertise(listen, seeds, kernel_route_source)


def advertise_problem(advertise: str, is_local: Callable[[str], bool]) -> str | None:
    """Why peers may not reach `advertise` from what this host can tell, or None when it is
    one of this host's own addresses (a NAT or a proxy in front is the operator's business)."""
    host, _ = split_address(advertise, "advertise")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError as exc:
        return f"{host} does not resolve ({exc.strerror or exc})"
    if any(is_local(address) for address in addresses):
        return None
    return f"{host} is not an address of this host (peers dial it and may never reach this node)"


def is_local_address(address: str) -> bool:
    """True when a socket can bind to `address`: the kernel owns it on some interface."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
