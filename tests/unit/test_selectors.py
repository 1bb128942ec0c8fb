"""Label selectors: parsing, canonical text, matching, and the requirements/fit they feed."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pack_manager.fit import check_capabilities
from pack_manager.requirements import RequirementsError, WorkloadRequirements
from pack_manager.selectors import (
    SelectorError,
    parse_one,
    parse_selectors,
    selector_failures,
    split_requirements,
)
from simulations.sim.world import CAPABILITIES

KEYS = st.sampled_from(["zone", "gpu", "disk", "team.io/owner", "tier"])
VALUES = st.sampled_from(["a", "b", "c", "ssd", "1", "2", "10", "-3", "x.y"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=5)


@pytest.mark.parametrize(
    "text, labels, ok",
    [
        ("zone=a", {"zone": "a"}, True),
        ("zone==a", {"zone": "b"}, False),
        ("zone!=a", {}, True),  # a node without the label satisfies != (as in Kubernetes)
        ("zone!=a", {"zone": "a"}, False),
        ("zone in (a, b)", {"zone": "b"}, True),
        ("zone in (a,b)", {}, False),
        ("zone notin (a,b)", {"zone": "c"}, True),
        ("zone notin (a,b)", {}, True),
        ("zone", {"zone": ""}, True),
        ("zone", {}, False),
        ("!zone", {}, True),
        ("!zone", {"zone": "a"}, False),
        ("gpu>1", {"gpu": "2"}, True),
        ("gpu>1", {"gpu": "1"}, False),
        ("gpu>=2", {"gpu": "10"}, True),  # integers, not text order
        ("gpu<10", {"gpu": "9"}, True),
        ("gpu<=-3", {"gpu": "-3"}, True),
        ("gpu>1", {"gpu": "many"}, False),
        ("gpu>1", {}, False),
    ],
)
def test_each_operator_matches_like_kubernetes(text, labels, ok):
    (selector,) = parse_selectors([text])
    assert (selector.failure(labels) is None) == ok


def test_a_failure_names_the_requirement_and_what_the_node_has():
    selectors = parse_selectors(["zone in (b,a), gpu>=2", "!spot"])
    assert selector_failures(selectors, {"zone": "c", "gpu": "1", "spot": "yes"}) == (
        "select !spot: node has 'yes'",
        "select gpu>=2: node has '1'",
        "select zone in (a,b): node has 'c'",
    )
    assert selector_failures(selectors, {"zone": "a", "gpu": "x"}) == (
        "select gpu>=2: node has 'x', not a whole number",
    )


def test_commas_inside_parentheses_do_not_split():
    assert split_requirements("a in (x,y), b, !c") == ["a in (x,y)", "b", "!c"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty requirement"),
        ("a,,b", "empty requirement"),
        ("zone in (a", "unclosed"),
        ("zone in a,b)", "unmatched"),
        ("zone in ()", "at least one value"),
        ("gpu>two", "compares whole numbers"),
        ("bad key=1", "must be letters"),
        ("zone=a b", "value 'a b'"),
        ("=a", "must be letters"),
    ],
)
def test_bad_selectors_are_refused_naming_the_requirement(text, fragment):
    with pytest.raises(SelectorError, match=fragment):
        parse_selectors([text])


@given(st.lists(st.tuples(KEYS, st.sampled_from(["=", "!=", ">", "<=", "in", "notin", "", "!"]), VALUES)))
def test_canonical_text_parses_back_to_the_same_selector(parts):
    texts = []
    for key, op, value in parts:
        if op in ("in", "notin"):
            texts.append(f"{key} {op} ({value},a)")
        elif op == "":
            texts.append(key)
        elif op == "!":
            texts.append(f"!{key}")
        elif op in (">", "<="):
            texts.append(f"{key}{op}{len(value)}")
        else:
            texts.append(f"{key}{op}{value}")
    selectors = parse_selectors(texts)
    assert parse_selectors([s.text for s in selectors]) == selectors
    assert parse_selectors(list(reversed(texts))) == selectors  # order of the user's flags never matters
    for selector in selectors:
        assert parse_one(selector.text) == selector


@given(LABELS, KEYS, st.lists(VALUES, min_size=1, max_size=3))
def test_in_and_notin_are_complements_and_equal_a_set_test(labels, key, values):
    inside = parse_one(f"{key} in ({','.join(values)})")
    outside = parse_one(f"{key} notin ({','.join(values)})")
    assert (inside.failure(labels) is None) == (labels.get(key) in values)
    assert (inside.failure(labels) is None) != (outside.failure(labels) is None)


@given(LABELS, KEYS, st.integers(-20, 20))
def test_numeric_comparisons_agree_with_integers(labels, key, n):
    have = labels.get(key)
    number = int(have) if have is not None and have.lstrip("-").isdigit() else None
    for op, expected in (
        (">", number is not None and number > n),
        ("<", number is not None and number < n),
        (">=", number is not None and number >= n),
        ("<=", number is not None and number <= n),
    ):
        assert (parse_one(f"{key}{op}{n}").failure(labels) is None) == expected


def _caps(labels):
    return replace(CAPABILITIES, executors=("podman", "wasm"), labels=labels)


def test_requirements_carry_selectors_on_the_wire_and_fit_names_the_failed_one():
    req = WorkloadRequirements.from_human(select=["zone in (a,b)", "gpu>=2"], labels=["disk=ssd"])
    assert WorkloadRequirements.unpack(req.pack()) == req
    assert req.to_wire()["selectors"] == ["gpu>=2", "zone in (a,b)"]
    assert check_capabilities(_caps({"zone": "a", "gpu": "4", "disk": "ssd"}), req) == ()
    assert check_capabilities(_caps({"zone": "c", "gpu": "4", "disk": "ssd"}), req) == (
        "select zone in (a,b): node has 'c'",
    )


def test_requirements_without_selectors_keep_their_wire_form():
    assert "selectors" not in WorkloadRequirements.from_human(labels=["a=b"]).to_wire()


def test_bad_selectors_from_a_user_or_a_peer_are_refused():
    with pytest.raises(RequirementsError, match="select 'gpu>x'"):
        WorkloadRequirements.from_human(select=["gpu>x"])
    wire = WorkloadRequirements().to_wire()
    for bad in (["zone in ("], "zone", [3]):
        with pytest.raises(RequirementsError, match="select"):
            WorkloadRequirements.from_wire({**wire, "selectors": bad})
