"""Named capabilities in the simulation: nodes that offer them, jobs that need them, and the
capability_slots invariant (no node ever runs more jobs needing a capability than its slots)."""

import pytest

from simulations.run import main
from simulations.sim.invariants import FinalFacts, RunEdge, capability_slots, check_all
from simulations.sim.options import Amount, OptionError, SimOptions, named_capabilities
from simulations.sim.session import run_session
from simulations.sim.world import CAPABILITIES, capability_records

A, B = "a" * 64, "b" * 64
NAMED = (("inference:llama3", 1), ("video:h264", 2))


def quiet(_line):
    pass


def test_capability_jobs_with_shards_and_wiped_crashes_never_exceed_a_nodes_slots():
    """A wiped restart is a new node on the same machine: runs that the crash ended count
    against the node that ran them."""
    options = SimOptions(
        nodes=8,
        seconds=40,
        quiet=6,
        seed=3,
        jobs=15,
        job_shards=2,
        capabilities=NAMED,
        capability_nodes=Amount(count=4),
        capability_jobs=0.6,
        crash=Amount(count=2),
        restart=1.0,
        restart_after=5,
        wipe=1.0,
        plots=False,
    )
    report, ok = run_session(options, say=quiet)
    assert ok and report["invariants"]["capability_slots"] == {"ok": True, "count": 0, "violations": []}
    jobs = report["jobs"]
    assert jobs["submitted"] == 30 and jobs["lost"] == 0 and jobs["duplicates"] == 0
    for name, limit in NAMED:
        figures = report["capabilities"][name]
        assert figures["max_concurrency"] == limit and figures["nodes"] == 4
        assert figures["jobs_needing"] > 0 and figures["runs"] >= figures["jobs_needing"]
        assert 1 <= figures["peak_on_one_node"] <= limit


def test_nodes_offering_capabilities_share_one_record_per_set():
    options = SimOptions(nodes=10, capabilities=NAMED, capability_nodes=Amount(share=0.3))
    records = capability_records(options)
    assert len(records) == 3 and len({id(r) for r in records.values()}) == 1
    assert dict(next(iter(records.values())).named) == dict(NAMED)
    assert "named" not in CAPABILITIES.to_wire()  # the other nodes keep the plain record


def facts(edges, offered):
    return FinalFacts(
        jobs={},
        up={A, B},
        capable_survivor=True,
        documents={A: ((), "same"), B: ((), "same")},
        partitions=[],
        orphan_claims=[],
        names={A: "n0", B: "n1"},
        run_edges=edges,
        offered=offered,
    )


def test_the_checker_flags_a_node_running_more_than_its_slots():
    x = ("inference:llama3",)
    over = [RunEdge(1.0, A, x, 1), RunEdge(2.0, A, x, 1), RunEdge(3.0, A, x, -1), RunEdge(4.0, A, x, -1)]
    found = check_all(facts(over, {A: {"inference:llama3": 1}}))["capability_slots"]
    assert found == ["n0 ran 2 jobs needing inference:llama3 at once at 2.000 s, but offers 1 slot"]
    # An end and the next start at the same instant, in that order, stay within one slot;
    # two slots take two runs; runs on different nodes never add up.
    handover = [RunEdge(1.0, A, x, 1), RunEdge(2.0, A, x, -1), RunEdge(2.0, A, x, 1), RunEdge(3.0, B, x, 1)]
    assert capability_slots(facts(handover, {A: {x[0]: 1}, B: {x[0]: 1}})) == []
    assert capability_slots(facts(over, {A: {x[0]: 2}})) == []
    # A node that does not offer the capability has no slot for it at all.
    assert capability_slots(facts([RunEdge(5.0, B, x, 1)], {B: {}})) == [
        "n1 ran 1 job needing inference:llama3 at once at 5.000 s, but offers 0 slots"
    ]


def test_bad_capability_options_are_refused_with_the_reason():
    assert named_capabilities("video:h264=2, inference:llama3=1") == NAMED
    with pytest.raises(OptionError, match="not NAME=MAX"):
        named_capabilities("inference:llama3")
    with pytest.raises(OptionError, match="max_concurrency 0"):
        named_capabilities("inference:llama3=0")
    with pytest.raises(OptionError, match="--capability-jobs needs --capabilities"):
        SimOptions(capability_jobs=0.5)
    assert main(["--capabilities", "bad name=1"]) == 2
