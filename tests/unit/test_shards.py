"""Sharded jobs in the pure core: the assignment every node computes, the shard specs, the
group's status."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scheduling_views import actions, caps, job, spec, view

from pack_manager.jobspec import JobInput, JobSpec, JobSpecError
from pack_manager.placement import rank, ranking_id, shard_rotation
from pack_manager.scheduling import Claim, order_nodes
from pack_manager.shards import group_status, shard_specs

IDS = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=12, unique=True)
DIGEST = "ab" * 32


def inputs(n):
    return tuple(JobInput(f"in{i}.txt", DIGEST) for i in range(n))


@given(IDS, st.integers(1, 8))
def test_shards_start_on_distinct_capable_nodes_or_go_round_robin(ids, count):
    capable = ids[: max(1, len(ids) // 2)]
    order = rank(b"\x01" * 32, ids)
    capable_in_order = [n for n in order if n in capable]
    firsts = [shard_rotation(order, capable_in_order, i)[0] for i in range(count)]
    if len(capable) >= count:
        assert len(set(firsts)) == count
    assert firsts == [capable_in_order[i % len(capable)] for i in range(count)]
    for i in range(count):
        rotated = shard_rotation(order, capable_in_order, i)
        assert sorted(rotated) == sorted(order)  # every node still listed once
        assert set(rotated[: len(capable)]) == set(capable)  # capable ones first


def test_shard_specs_share_a_group_and_split_inputs_i_i_plus_n():
    base = replace(spec(), inputs=inputs(5), env={"A": "1"})
    shards = shard_specs(base, 3, split_inputs=True)
    assert len({s.shard_group for s in shards}) == 1 and len({s.job_id() for s in shards}) == 3
    assert [[i.name for i in s.inputs] for s in shards] == [
        ["in0.txt", "in3.txt"],
        ["in1.txt", "in4.txt"],
        ["in2.txt"],
    ]
    assert [dict(s.env) for s in shards][1] == {"A": "1", "FORM_SHARD_INDEX": "1", "FORM_SHARD_COUNT": "3"}
    assert all(JobSpec.unpack(s.pack()) == s for s in shards)
    assert [len(s.inputs) for s in shard_specs(base, 2, split_inputs=False)] == [5, 5]
    assert shard_specs(base, 3, False)[0].shard_group == shards[0].shard_group  # a function of the spec
    assert shard_specs(replace(base, nonce=b"n" * 16), 3, False)[0].shard_group != shards[0].shard_group


@pytest.mark.parametrize(
    "count, split, env, fragment",
    [
        (0, False, {}, "shards: 0"),
        (65, False, {}, "shards: 65"),
        (2, False, {"FORM_SHARD_INDEX": "9"}, "env"),
    ],
)
def test_bad_shard_requests_are_refused(count, split, env, fragment):
    with pytest.raises(JobSpecError, match=fragment):
        shard_specs(replace(spec(), env=env), count, split)
    with pytest.raises(JobSpecError, match="no inputs to split"):
        shard_specs(spec(), 2, True)
    with pytest.raises(JobSpecError, match="no --replicas"):
        shard_specs(spec(replicas=2), 2, False)


@given(st.integers(3, 7), st.randoms())
def test_on_one_view_each_shard_is_claimed_once_each_on_its_own_node(n_nodes, rnd):
    nodes = {bytes([i]) * 32: view() for i in range(1, n_nodes + 1)}
    shards = shard_specs(spec(), 3, False)
    claimants = []
    for shard in shards:
        shuffled = list(nodes.items())
        rnd.shuffle(shuffled)
        found = [n for n, a in actions(job(shard), dict(shuffled)).items() if isinstance(a, Claim)]
        assert len(found) == 1
        claimants += found
    assert len(set(claimants)) == 3
    group_order = rank(ranking_id(shards[0].shard_group), nodes)
    assert claimants == group_order[:3]  # the first three ranked capable nodes


def test_a_shard_whose_node_died_goes_on_round_the_ring():
    nodes = {bytes([i]) * 32: view() for i in range(1, 4)}
    shard = shard_specs(spec(), 3, False)[1]
    first, second, third = order_nodes(job(shard), nodes)
    nodes[first] = view(status="dead")
    assert [n for n, a in actions(job(shard), nodes).items() if isinstance(a, Claim)] == [second]
    nodes[third] = view(caps(executors=()))  # incapable nodes come last in a shard's order
    assert order_nodes(job(shard), nodes)[-1] == third


def shard_status(state, reason="r"):
    return {
        "id": "x",
        "kind": "run",
        "state": state,
        "reason": reason,
        "reasons": [],
        "node": None,
        "attempt": 1,
        "submitted_at": "t",
        "started_at": "s" if state != "queued" else None,
        "finished_at": "f" if state in ("succeeded", "failed") else None,
        "exit_code": 0,
        "outputs": [],
        "attempts": [],
    }


def test_the_group_succeeds_when_every_shard_has_and_is_final_only_when_all_are():
    assert group_status("g", [shard_status("succeeded")] * 3)["state"] == "succeeded"
    waiting = group_status("g", [shard_status("succeeded"), shard_status("running"), shard_status("queued")])
    assert waiting["state"] == "running" and waiting["reason"].startswith("1 of 3 shards succeeded; shard 1")
    failed = group_status("g", [shard_status("succeeded"), shard_status("failed", "exit 1")])
    assert (failed["state"], failed["reason"]) == ("failed", "shard 1 failed: exit 1")
    assert (
        group_status("g", [shard_status("unschedulable"), shard_status("running")])["state"]
        == "unschedulable"
    )
    assert [s["index"] for s in waiting["shards"]] == [0, 1, 2]
