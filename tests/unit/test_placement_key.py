"""Placement keys: jobs that share a key rank the nodes alike, whatever their ids."""

import os
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scheduling_views import actions, cluster, job, spec

from pack_manager.jobspec import JobSpec, JobSpecError
from pack_manager.placement import rank, ranking_id
from pack_manager.scheduling import Claim, order_nodes


def keyed_spec(key):
    return replace(spec(), placement_key=key)


def keyed(key):
    return job(keyed_spec(key))


IDS = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=30, unique=True)


def test_without_a_key_the_job_id_ranks_and_with_one_blake3_of_the_key():
    job_id = os.urandom(32)
    assert ranking_id(job_id) == job_id
    assert (
        ranking_id(job_id, "dataset-7") == ranking_id(os.urandom(32), "dataset-7") != ranking_id(job_id, "x")
    )
    assert len(ranking_id(job_id, "dataset-7")) == 32


@given(
    IDS,
    st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20
    ),
    st.randoms(),
)
def test_jobs_sharing_a_key_order_the_nodes_alike_on_any_view_order(ids, key, rnd):
    first = keyed(key)
    second = keyed(key)
    assert first.job_id != second.job_id
    nodes = cluster()
    nodes = {node_id: nodes[next(iter(nodes))] for node_id in ids}
    shuffled = list(nodes.items())
    rnd.shuffle(shuffled)
    assert order_nodes(first, nodes) == order_nodes(second, dict(shuffled)) == rank(ranking_id(b"", key), ids)


def test_the_key_decides_who_claims():
    nodes = cluster()
    for key in ("a", "b", "c", "d"):
        wanted = rank(ranking_id(b"", key), nodes)[0]
        for _ in range(3):
            claims = {n for n, act in actions(keyed(key), nodes).items() if isinstance(act, Claim)}
            assert claims == {wanted}


def test_the_key_is_on_the_wire_only_when_set_and_checked():
    keyed = keyed_spec("dataset-7")
    assert JobSpec.unpack(keyed.pack()) == keyed
    assert "placement_key" not in spec().to_wire()
    for bad in ("", "a\x00b", "x" * 1025):
        with pytest.raises(JobSpecError, match="placement_key"):
            replace(keyed, placement_key=bad)
    with pytest.raises(JobSpecError, match="placement_key"):
        JobSpec.from_wire({**keyed.to_wire(), "placement_key": 7})
