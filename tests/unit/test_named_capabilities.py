"""Named capabilities and region: names and patterns, the wire, formd.toml, and fit with slots."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.config import ConfigError, from_mapping, render
from metrics_agent.capabilities import NodeCapabilities
from metrics_agent.capacity import NodeCapacity, Reservation, apply_reservations
from metrics_agent.named_capabilities import CapabilityNameError, matches, parse_assignment
from metrics_agent.wire import WireError
from pack_manager.fit import capability_slots, check_capabilities, check_capacity
from pack_manager.requirements import RequirementsError, WorkloadRequirements
from simulations.sim.world import CAPABILITIES

NODE = replace(
    CAPABILITIES,
    executors=("podman", "wasm"),
    region="eu",
    named={"inference:llama3": 2, "inference:mistral": 1, "video:transcode:h264": 1},
)
IDLE = NodeCapacity(cpu_millicores_idle=4000, memory_available_bytes=8 << 30, disk_free_bytes=100 << 30)


def capacity(*held: tuple[str, ...]) -> NodeCapacity:
    return apply_reservations(NODE, IDLE, [Reservation(capabilities=names) for names in held])


def req(*patterns: str, region: str | None = None) -> WorkloadRequirements:
    return WorkloadRequirements.from_human(capabilities=list(patterns), region=region)


def test_patterns_match_names_under_a_prefix_only():
    assert matches("inference:*", "inference:llama3")
    assert matches("inference:*", "inference:llama3:70b")
    assert not matches("inference:*", "inference")
    assert not matches("inference:*", "inferencex:a")
    assert matches("video:transcode:h264", "video:transcode:h264")
    assert not matches("video:transcode", "video:transcode:h264")


def test_a_node_without_the_capability_or_region_never_fits_and_the_reason_names_it():
    assert check_capabilities(NODE, req("inference:llama3", region="eu")) == ()
    assert check_capabilities(NODE, req("audio:*", region="us")) == (
        "region: needs 'us', node is in 'eu'",
        "capability audio:*: node does not offer it "
        "(offers inference:llama3, inference:mistral, video:transcode:h264)",
    )
    assert check_capabilities(replace(NODE, region=""), req(region="eu")) == (
        "region: needs 'eu', node names no region",
    )


def test_all_slots_in_use_is_not_now_with_the_documented_reason():
    job = req("inference:llama3")
    assert check_capacity(NODE, capacity(("inference:llama3",)), job) == ()
    full = capacity(("inference:llama3",), ("inference:llama3",))
    assert full.capabilities_in_use == {"inference:llama3": 2}
    assert check_capacity(NODE, full, job) == ("capability inference:llama3: 2 of 2 in use",)
    # A prefix takes any free slot under it; it waits only when all of them are taken.
    assert capability_slots(NODE, full, req("inference:*")) == ("inference:mistral",)
    everything = capacity(("inference:llama3",), ("inference:llama3",), ("inference:mistral",))
    assert check_capacity(NODE, everything, req("inference:*")) == ("capability inference:*: 3 of 3 in use",)


@given(
    st.lists(
        st.sampled_from(["inference:llama3", "inference:*", "video:*", "inference:mistral"]), max_size=20
    )
)
def test_claiming_while_it_fits_never_exceeds_any_max_concurrency(wanted):
    held: list[tuple[str, ...]] = []
    for pattern in wanted:
        job = req(pattern)
        now = capacity(*held)
        if not check_capacity(NODE, now, job):
            slots = capability_slots(NODE, now, job)
            assert len(slots) == 1
            held.append(slots)
        in_use = capacity(*held).capabilities_in_use
        assert all(in_use[name] <= NODE.named[name] for name in in_use)


def test_capabilities_region_and_slots_in_use_survive_the_wire():
    assert NodeCapabilities.from_wire(NODE.to_wire()) == NODE
    assert "named" not in CAPABILITIES.to_wire() and "region" not in CAPABILITIES.to_wire()
    busy = capacity(("inference:llama3",))
    assert NodeCapacity.from_wire(busy.to_wire()) == busy
    assert "capabilities_in_use" not in IDLE.to_wire()
    job = req("inference:*", "video:transcode:h264", region="eu")
    assert WorkloadRequirements.unpack(job.pack()) == job


@pytest.mark.parametrize(
    "change",
    [
        {"named": {"bad name": 1}},
        {"named": {"a": 0}},
        {"named": ["a"]},
        {"region": "no spaces"},
        {"region": 3},
    ],
)
def test_bad_capabilities_from_a_peer_are_refused(change):
    with pytest.raises(WireError):
        NodeCapabilities.from_wire({**NODE.to_wire(), **change})


def test_bad_job_capabilities_are_refused_naming_them():
    with pytest.raises(RequirementsError, match="capability: 'a b'"):
        req("a b")
    with pytest.raises(RequirementsError, match="region: 'x y'"):
        req(region="x y")
    with pytest.raises(CapabilityNameError, match="not NAME=MAX"):
        parse_assignment("inference:llama3")
    with pytest.raises(CapabilityNameError, match="max_concurrency 0"):
        parse_assignment("inference:llama3=0")


def test_formd_toml_capabilities_table_round_trips():
    config = from_mapping(
        {
            "advertise": "127.0.0.1:7946",
            "region": "eu-west",
            "capabilities": {
                "inference:llama3": {"max_concurrency": 2},
                "video:transcode:h264": {"max_concurrency": 1},
            },
        }
    )
    assert config.named_capabilities == {"inference:llama3": 2, "video:transcode:h264": 1}
    text = render(config)
    assert '"inference:llama3" = { "max_concurrency" = 2 }' in text
    import tomllib

    assert from_mapping(tomllib.loads(text)) == config


@pytest.mark.parametrize(
    "capabilities, fragment",
    [
        ({"a": 2}, "must be a table"),
        ({"a": {"max_concurrency": 0}}, "max_concurrency 0"),
        ({"a": {"max": 1}}, "must be a table"),
        ({"a b": {"max_concurrency": 1}}, "not a capability name"),
    ],
)
def test_bad_capabilities_in_formd_toml_name_the_key(capabilities, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_mapping({"advertise": "127.0.0.1:7946", "capabilities": capabilities})
    with pytest.raises(ConfigError, match="region"):
        from_mapping({"advertise": "127.0.0.1:7946", "region": "a b"})
