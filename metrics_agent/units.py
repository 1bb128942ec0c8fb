"""Human units <-> the integers every node compares.

Placement compares integers only (millicores, bytes) so every node computes the same
answer; humans type "500m", "1.5", "4GiB", "512MB". Parsing is strict: anything that is
not clearly a quantity (negative, a percentage, an unknown unit, an absurd size) is an
error with a message that says what was wrong and what would have been accepted.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
PIB = 1024**5

# Upper bounds: a requirement beyond these is a typo, not a workload.
MAX_BYTES = PIB
MAX_MILLICORES = 100_000 * 1000

_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": KIB,
    "kib": KIB,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": MIB,
    "mib": MIB,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": GIB,
    "gib": GIB,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": TIB,
    "tib": TIB,
    "p": 1000**5,
    "pb": 1000**5,
    "pi": PIB,
    "pib": PIB,
}

_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


class UnitError(ValueError):
    """A human quantity that could not be understood; the message says why."""


def _split(text: str, what: str) -> tuple[Decimal, str]:
    if not isinstance(text, str):
        raise UnitError(f"{what}: expected text such as '2' or '4GiB', got {type(text).__name__}")
    stripped = text.strip()
    if stripped.startswith("-"):
        raise UnitError(f"{what}: {text!r} is negative")
    if "%" in stripped:
        raise UnitError(f"{what}: {text!r} is a percentage; give an absolute amount")
    match = _NUMBER.match(stripped)
    if not match:
        raise UnitError(f"{what}: {text!r} is not a quantity")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise UnitError(f"{what}: {text!r} is not a number") from exc
    return number, match.group(2)


def parse_cpu(text: str | int) -> int:
    """'500m' -> 500, '2' -> 2000, '1.5' -> 1500 millicores."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    number, unit = _split(text, "cpu")
    if unit == "m":
        millicores = number
    elif unit == "":
        millicores = number * 1000
    else:
        raise UnitError(
            f"cpu: unknown unit {unit!r} in {text!r}; use cores ('2', '1.5') or millicores ('500m')"
        )
    if millicores != millicores.to_integral_value():
        raise UnitError(f"cpu: {text!r} is finer than one millicore")
    value = int(millicores)
    if value > MAX_MILLICORES:
        raise UnitError(f"cpu: {text!r} is more than {MAX_MILLICORES // 1000:,} cores")
    return value


def parse_bytes(text: str | int, what: str = "size") -> int:
    """'512MiB' -> 536870912, '4GB' -> 4000000000, '4G' -> 4000000000, '100' -> 100."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    number, unit = _split(text, what)
    scale = _BYTE_UNITS.get(unit.lower())
    if scale is None:
        raise UnitError(f"{what}: unknown unit {unit!r} in {text!r}; use B, KB/KiB, MB/MiB, GB/GiB, TB/TiB")
    value = number * scale
    if value != value.to_integral_value():
        raise UnitError(f"{what}: {text!r} is not a whole number of bytes")
    result = int(value)
    if result > MAX_BYTES:
        raise UnitError(f"{what}: {text!r} is more than 1 PiB")
    return result


def parse_duration(text: str | int | float) -> float:
    """'90s', '10m', '2h', '1500ms', '30' (seconds) -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    number, unit = _split(text, "duration")
    scale = {"": 1, "s": 1, "ms": Decimal("0.001"), "m": 60, "min": 60, "h": 3600, "d": 86400}.get(unit)
    if scale is None:
        raise UnitError(f"duration: unknown unit {unit!r} in {text!r}; use ms, s, m, h or d")
    seconds = number * scale
    if seconds > 30 * 86400:
        raise UnitError(f"duration: {text!r} is longer than 30 days")
    return float(seconds)


def format_bytes(value: int) -> str:
    """4294967296 -> '4.0 GiB' (one decimal, binary units), for humans only."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def format_cpu(millicores: int) -> str:
    """1500 -> '1.5 cores', 250 -> '250m'."""
    if millicores % 1000 == 0:
        cores = millicores // 1000
        return f"{cores} core" if cores == 1 else f"{cores} cores"
    if millicores < 1000:
        return f"{millicores}m"
    return f"{millicores / 1000:.2f}".rstrip("0").rstrip(".") + " cores"
