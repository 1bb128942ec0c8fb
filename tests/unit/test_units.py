"""Human quantities: what is accepted, what it means, and the errors for everything else."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics_agent.units import (
    GIB,
    MIB,
    UnitError,
    format_bytes,
    format_cpu,
    parse_bytes,
    parse_cpu,
    parse_duration,
)


@pytest.mark.parametrize(
    "text, millicores",
    [
        ("500m", 500),
        ("2", 2000),
        ("1.5", 1500),
        (" 0.25 ", 250),
        ("100000", 100_000_000),
        (3, 3000),
        ("0", 0),
    ],
)
def test_cpu_forms(text, millicores):
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    "text, bytes_",
    [
        ("512MiB", 512 * MIB),
        ("4GB", 4_000_000_000),
        ("4G", 4_000_000_000),
        ("4gib", 4 * GIB),
        ("1.5GiB", 3 * GIB // 2),
        ("100", 100),
        ("64Ki", 65536),
        ("1PiB", 1024**5),
    ],
)
def test_byte_forms(text, bytes_):
    assert parse_bytes(text) == bytes_


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("-1", "negative"),
        ("50%", "percentage"),
        ("2 cores", "unknown unit"),
        ("1.0001m", "finer than one millicore"),
        ("100001", "more than 100,000 cores"),
        ("", "not a quantity"),
        ("abc", "not a quantity"),
        ("1e3", "not a quantity"),
        ("nan", "not a quantity"),
    ],
)
def test_cpu_rejections(text, fragment):
    with pytest.raises(UnitError, match=fragment):
        parse_cpu(text)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("-4GiB", "negative"),
        ("10%", "percentage"),
        ("4 parsecs", "unknown unit"),
        ("2PiB", "more than 1 PiB"),
        ("0.5B", "whole number"),
        ("4GiB4", "not a quantity"),
        ("inf", "not a quantity"),
    ],
)
def test_byte_rejections(text, fragment):
    with pytest.raises(UnitError, match=fragment):
        parse_bytes(text, "memory")


def test_error_names_the_field():
    with pytest.raises(UnitError, match=r"^memory: "):
        parse_bytes("lots", "memory")


def test_bools_are_not_numbers():
    with pytest.raises(UnitError):
        parse_cpu(True)


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1500ms", 1.5), ("30", 30)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-5s", "5 fortnights", "31d", "5%"])
def test_duration_rejections(text):
    with pytest.raises(UnitError):
        parse_duration(text)


def test_formatting():
    assert format_bytes(4 * GIB) == "4.0 GiB"
    assert format_bytes(1536 * MIB) == "1.5 GiB"
    assert format_bytes(12) == "12 B"
    assert format_cpu(1500) == "1.5 cores"
    assert format_cpu(250) == "250m"
    assert format_cpu(1000) == "1 core"
    assert format_cpu(4000) == "4 cores"


@given(st.integers(0, 1024**5))
def test_bytes_round_trip_through_plain_numbers(n):
    assert parse_bytes(str(n)) == n


@given(st.integers(0, 100_000_000))
def test_millicores_round_trip(m):
    assert parse_cpu(f"{m}m") == m
