"""Strict readers for plain values that came from a peer (msgpack-decoded, untrusted).

Every record we gossip is decoded from bytes someone else wrote. These helpers turn
"whatever msgpack produced" into checked Python values, or raise WireError saying which
field was wrong, so a bad record is dropped whole and never half-applied.
"""

from __future__ import annotations

from typing import Any, Mapping

MAX_TEXT = 4096
MAX_ITEMS = 1024
MAX_INT = 2**63 - 1


class WireError(ValueError):
    """A decoded value does not have the shape or range its schema requires."""


def need_map(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{what}: expected a map, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise WireError(f"{what}: more than {MAX_ITEMS} entries")
    return value


def need_int(record: Mapping[str, Any], key: str, *, low: int = 0, high: int = MAX_INT) -> int:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"{key}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise WireError(f"{key}: {value} is outside {low}..{high}")
    return value


def need_str(
    record: Mapping[str, Any], key: str, *, limit: int = MAX_TEXT, optional: bool = False
) -> str | None:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise WireError(f"{key}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise WireError(f"{key}: longer than {limit} characters")
    return value


def need_list(record: Mapping[str, Any], key: str, *, limit: int = MAX_ITEMS) -> list[Any]:
    value = record.get(key)
    if not isinstance(value, (list, tuple)):
        raise WireError(f"{key}: expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise WireError(f"{key}: more than {limit} items")
    return list(value)


def need_str_map(record: Mapping[str, Any], key: str, *, limit: int = 256) -> dict[str, str]:
    value = record.get(key, {})
    if not isinstance(value, dict):
        raise WireError(f"{key}: expected a map of text to text, got {type(value).__name__}")
    if len(value) > limit:
        raise WireError(f"{key}: more than {limit} entries")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 253 or len(v) > MAX_TEXT:
            raise WireError(f"{key}: entries must be short text = text")
    return dict(value)
