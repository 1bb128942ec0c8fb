"""Named capabilities a node offers (`inference:llama3`, `video:transcode:h264`), each with a
number of slots (max_concurrency), and the patterns jobs ask for them with. Pure.

A name is ':'-separated parts of letters, digits, '.', '_' or '-'. A pattern is a name, or a
prefix followed by ':*', which matches every name under that prefix (`inference:*` matches
`inference:llama3` and `inference:llama3:70b`, not `inference` itself).
"""

from __future__ import annotations

import re
from typing import Mapping

MAX_NAME = 128
MAX_CONCURRENCY = 10_000
MAX_NAMED = 64  # per node, and per job
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class CapabilityNameError(ValueError):
    """A capability name, pattern or slot count that cannot be accepted; names it."""


def check_name(name: object, what: str = "capability") -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.match(name):
        raise CapabilityNameError(
            f"{what}: {name!r} is not a capability name (':'-separated parts of letters, digits, "
            f"'.', '_', '-'; at most {MAX_NAME} characters)"
        )
    return name


def check_pattern(pattern: object, what: str = "capability") -> str:
    """A name, or `prefix:*`."""
    if isinstance(pattern, str) and pattern.endswith(":*"):
        check_name(pattern[:-2], what)
        return pattern
    return check_name(pattern, what)


def check_slots(name: str, value: object, what: str = "capability") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise CapabilityNameError(f"{what} {name}: max_concurrency {value!r} is outside 1..{MAX_CONCURRENCY}")
    return value


def check_named(named: Mapping[str, int], what: str = "capabilities") -> dict[str, int]:
    """{name: max_concurrency}, every name and count checked; sorted by name."""
    if len(named) > MAX_NAMED:
        raise CapabilityNameError(f"{what}: at most {MAX_NAMED} named capabilities")
    return {check_name(name, what): check_slots(name, named[name], what) for name in sorted(named)}


def matches(pattern: str, name: str) -> bool:
    if pattern.endswith(":*"):
        return name.startswith(pattern[:-1])  # keeps the ':' so 'inference:*' never matches 'inferencex'
    return name == pattern


def matching(pattern: str, named: Mapping[str, int]) -> list[str]:
    """The node's names the pattern matches, sorted (every node picks among them alike)."""
    return sorted(name for name in named if matches(pattern, name))


def parse_assignment(text: str, what: str = "--capability") -> tuple[str, int]:
    """'inference:llama3=2' -> ('inference:llama3', 2)."""
    name, sep, count = text.rpartition("=")
    if not sep:
        raise CapabilityNameError(f"{what}: {text!r} is not NAME=MAX (e.g. inference:llama3=2)")
    try:
        slots = int(count.strip())
    except ValueError:
        raise CapabilityNameError(f"{what}: {count!r} in {text!r} is not a whole number") from None
    name = check_name(name.strip(), what)
    return name, check_slots(name, slots, what)
