"""Deletes (retiring finished jobs): delete_local, the may_delete rule for remote deletes,
convergence under any delivery order, and deleted content really leaving the store."""

from __future__ import annotations

import pytest
from crdt_nodes import FakeNode, rogue_update, snapshot_view
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_state.document import ClusterDocument
from crdt_state.persistence import DocumentStore
from crdt_state.records import RecordError
from crdt_state.signing import seal_record
from crdt_state.state_vector import decode_state_vector

JOB = "cd" * 32
OTHER_JOB = "ef" * 32


def allow_all(map_name, key, held):
    return True


def cluster(count: int = 3, may_delete=allow_all) -> list[FakeNode]:
    nodes = [FakeNode.create() for _ in range(count)]
    for node in nodes:
        node.heartbeat()
        node.doc.may_delete = may_delete
    full_exchange(*nodes)
    return nodes


def full_exchange(*nodes: FakeNode) -> None:
    """Anti-entropy between every ordered pair: each sends what the other's state vector lacks."""
    for sender in nodes:
        sender.doc.drain_local_updates()
    for _ in range(2):
        for sender in nodes:
            for receiver in nodes:
                if sender is not receiver:
                    result = receiver.doc.apply_remote(sender.doc.update_since(receiver.doc.state_vector()))
                    assert result.accepted, result.reason


def push(sender: FakeNode, *receivers: FakeNode) -> list:
    """Deliver the sender's pending local updates; the results, per update and receiver."""
    return [
        receiver.doc.apply_remote(update)
        for update in sender.doc.drain_local_updates()
        for receiver in receivers
    ]


def visible(doc: ClusterDocument) -> dict:
    return {
        name: {k: e.envelope for k, e in doc.items(name).items()}
        for name in ("nodes", "jobs", "runs", "cancels")
    }


def with_job_run_cancel(a: FakeNode, b: FakeNode, c: FakeNode) -> str:
    run_key = f"{JOB}:{a.hex}"
    a.put("jobs", JOB, "job", {"kind": "run"})
    a.put("runs", run_key, "run", {"state": "succeeded"})
    b.put("cancels", JOB, "cancel", {"why": "user"})
    assert all(r.accepted for r in push(a, b, c) + push(b, a, c))
    return run_key


# ---- delete_local ---------------------------------------------------------------------------


def test_delete_local_removes_in_one_update_that_replicates():
    a, b, c = cluster()
    run_key = with_job_run_cancel(a, b, c)
    removed = a.doc.delete_local([("jobs", JOB), ("runs", run_key), ("cancels", JOB), ("jobs", OTHER_JOB)])
    assert removed == 3  # OTHER_JOB was never there: skipped
    assert a.doc.get("jobs", JOB) is None and a.doc.items("runs") == {} and a.doc.items("cancels") == {}
    (update,) = a.doc.drain_local_updates()  # one transaction, one update
    for receiver in (b, c):
        result = receiver.doc.apply_remote(update)
        assert result.accepted, result.reason
        assert result.changed == {("jobs", JOB), ("runs", run_key), ("cancels", JOB)}
        assert visible(receiver.doc) == visible(a.doc)
    assert len(a.doc.items("nodes")) == 3
    # A node may delete what another wrote (the cancel is b's): retirement is not ownership.
    assert b.doc.get("cancels", JOB) is None


def test_delete_local_of_nothing_present_makes_no_update():
    (a,) = cluster(1)
    assert a.doc.delete_local([("jobs", JOB)]) == 0
    assert a.doc.delete_local([]) == 0
    assert a.doc.drain_local_updates() == []


@pytest.mark.parametrize(
    "bad",
    [("nodes", "00" * 32), ("blobs", JOB), ("jobs", 5), "jobs", ("jobs", JOB, "extra")],
)
def test_delete_local_refuses_bad_input_and_removes_nothing(bad):
    a, b, c = cluster()
    with_job_run_cancel(a, b, c)
    view = snapshot_view(a.doc)
    with pytest.raises(RecordError, match="delete_local takes"):
        a.doc.delete_local([("jobs", JOB), bad])
    assert snapshot_view(a.doc) == view
    assert a.doc.drain_local_updates() == []


# ---- remote deletes: the may_delete rule ---------------------------------------------------


@pytest.mark.parametrize(
    "rule, why", [(None, "no delete rule set"), (lambda m, k, held: False, "not allowed yet")]
)
def test_a_remote_delete_is_refused_without_a_rule_or_when_it_says_no(rule, why):
    a, b, c = cluster()
    with_job_run_cancel(a, b, c)
    c.doc.may_delete = rule
    a.doc.delete_local([("jobs", JOB)])
    (update,) = a.doc.drain_local_updates()
    view = snapshot_view(c.doc)
    result = c.doc.apply_remote(update)
    assert not result.accepted
    assert result.reason.startswith(f"jobs/{JOB[:16]}") and why in result.reason
    assert snapshot_view(c.doc) == view


def test_the_rule_sees_the_entry_held_and_a_failing_rule_refuses():
    a, b, c = cluster()
    with_job_run_cancel(a, b, c)
    asked = []

    def rule(map_name, key, held):
        asked.append((map_name, key, held.signer_id, held.body))
        raise ValueError("bug in the rule")

    c.doc.may_delete = rule
    a.doc.delete_local([("cancels", JOB)])
    (update,) = a.doc.drain_local_updates()
    view = snapshot_view(c.doc)
    result = c.doc.apply_remote(update)
    assert not result.accepted and "delete rule failed: ValueError: bug in the rule" in result.reason
    assert asked == [("cancels", JOB, b.node_id, {"why": "user"})]
    assert snapshot_view(c.doc) == view


def test_a_refused_delete_is_accepted_later_through_a_full_exchange():
    a, b, c = cluster()
    with_job_run_cancel(a, b, c)
    retention_over = [False]  # stands for "final and finished long enough ago" turning true
    c.doc.may_delete = lambda map_name, key, held: retention_over[0]
    a.doc.delete_local([("jobs", JOB)])
    assert not push(a, c)[0].accepted
    assert c.doc.get("jobs", JOB) is not None
    # The anti-entropy diff carries the delete set even though c lacks no inserted item.
    diff = a.doc.update_since(c.doc.state_vector())
    assert not c.doc.apply_remote(diff).accepted
    retention_over[0] = True
    result = c.doc.apply_remote(a.doc.update_since(c.doc.state_vector()))
    assert result.accepted and result.changed == {("jobs", JOB)}
    assert c.doc.get("jobs", JOB) is None
    assert visible(c.doc) == visible(a.doc)


def test_deleting_node_records_is_always_refused():
    a, b, c = cluster()
    for update in (
        rogue_update(c.doc, {}, deletes=[("nodes", b.hex)]),
        rogue_update(c.doc, {}, deletes=[("nodes", c.hex)]),
    ):
        view = snapshot_view(c.doc)
        result = c.doc.apply_remote(update)
        assert not result.accepted and "deleting nodes entries is never accepted" in result.reason
        assert snapshot_view(c.doc) == view


def test_deleting_what_was_never_visible_here_is_accepted():
    # c never received the job: the delete changes nothing a reader sees, so even a replica
    # with no delete rule takes it; the job, arriving later, never becomes visible.
    a, b, c = cluster()
    c.doc.may_delete = None
    a.put("jobs", JOB, "job", {"kind": "run"})
    (insert,) = a.doc.drain_local_updates()
    a.doc.delete_local([("jobs", JOB)])
    (delete,) = a.doc.drain_local_updates()
    first = c.doc.apply_remote(delete)
    assert first.accepted and first.changed == frozenset()
    second = c.doc.apply_remote(insert)
    assert second.accepted and second.changed == frozenset()
    assert c.doc.get("jobs", JOB) is None
    assert decode_state_vector(c.doc.state_vector()) == decode_state_vector(a.doc.state_vector())


def test_deleting_an_entry_held_but_never_shown_is_accepted():
    # A store can hold an entry that does not verify (skipped on restore); removing it takes
    # nothing from readers, so it is accepted even without a delete rule.
    a, b = cluster(2)
    stranger = FakeNode.create()
    poisoned = rogue_update(a.doc, {("jobs", OTHER_JOB): seal_record(stranger.key, "job", {})})
    restored = ClusterDocument.from_updates([a.doc.full_state(), poisoned], a.node_id)
    assert restored.get("jobs", OTHER_JOB) is None and len(restored.ignored) == 1
    view = snapshot_view(restored)
    result = restored.apply_remote(rogue_update(restored, {}, deletes=[("jobs", OTHER_JOB)]))
    assert result.accepted and result.changed == frozenset()
    assert snapshot_view(restored)[:2] == view[:2]


# ---- deleted content really goes away -------------------------------------------------------


def test_deleted_values_leave_the_encoded_state_and_the_store(tmp_path):
    a, b = cluster(2)
    base = len(a.doc.full_state())
    keys = [f"{n:064x}" for n in range(40)]
    for key in keys:
        a.put("jobs", key, "job", {"payload": bytes([n % 251 for n in range(20_000)]), "key": key})
    push(a, b)
    full = len(a.doc.full_state())
    with DocumentStore(tmp_path / "a") as store:
        store.snapshot(a.doc.full_state())
        assert a.doc.delete_local(("jobs", key) for key in keys) == 40
        (delete,) = a.doc.drain_local_updates()
        store.append(delete, durable=True)
        log_replayed = ClusterDocument.from_updates(store.load(), a.node_id)
        store.snapshot(a.doc.full_state())
    assert b.doc.apply_remote(delete).accepted
    after_a, after_b = len(a.doc.full_state()), len(b.doc.full_state())
    print(
        f"\nencoded state: {base} B with 2 nodes, {full} B with 40 jobs of 20 kB, "
        f"{after_a} B after deleting them (replica: {after_b} B): {(after_a - base) / 40:.0f} B left per deleted job"
    )
    # pycrdt keeps a deleted map entry's id, origin and key text (64 hex characters here) as a
    # tombstone; the value itself is gone.
    assert after_a < base + 40 * 128 and after_b < base + 40 * 128
    with DocumentStore(tmp_path / "a") as store:
        loaded = store.load()
        snapshot_replayed = ClusterDocument.from_updates(loaded, a.node_id)
    assert sum(len(update) for update in loaded) == after_a
    for restored in (log_replayed, snapshot_replayed):
        assert visible(restored) == visible(a.doc)
        assert decode_state_vector(restored.state_vector()) == decode_state_vector(a.doc.state_vector())
        assert restored.ignored == []


# ---- convergence: random puts/deletes on 3 replicas, any delivery order --------------------

JOB_KEYS = [f"{n:02x}" * 32 for n in range(4)]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put_job"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(st.just("put_run"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(
            st.just("delete"),
            st.integers(0, 2),
            st.sets(st.tuples(st.sampled_from(["jobs", "runs"]), st.integers(0, 3), st.integers(0, 2))),
        ),
        st.tuples(st.just("deliver"), st.integers(0, 1000), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=operations)
def test_random_puts_and_deletes_converge_in_any_delivery_order(script):
    nodes = cluster()
    in_flight: list[tuple[int, bytes]] = []  # (receiver, update); pushes may be lost or reordered
    version = 0
    for action in script:
        kind, index = action[0], action[1]
        if kind == "deliver":
            if in_flight:
                receiver, update = in_flight.pop(index % len(in_flight))
                if action[2]:  # else lost
                    result = nodes[receiver].doc.apply_remote(update)
                    assert result.accepted or result.missing, result.reason  # honest traffic is never refused
            continue
        node = nodes[index]
        if kind == "put_job":
            version += 1
            node.put("jobs", JOB_KEYS[action[2]], "job", {"v": version})
        elif kind == "put_run":
            version += 1
            node.put("runs", f"{JOB_KEYS[action[2]]}:{node.hex}", "run", {"v": version})
        elif kind == "delete":
            node.doc.delete_local(
                (map_name, JOB_KEYS[job] if map_name == "jobs" else f"{JOB_KEYS[job]}:{nodes[owner].hex}")
                for map_name, job, owner in action[2]
            )
        for update in node.doc.drain_local_updates():
            in_flight.extend((receiver, update) for receiver in range(3) if receiver != index)
    full_exchange(*nodes)
    first = nodes[0].doc
    for node in nodes[1:]:
        assert visible(node.doc) == visible(first)
        assert decode_state_vector(node.doc.state_vector()) == decode_state_vector(first.state_vector())
    for node in nodes:  # and the views are what a fresh read of the document shows
        assert visible(ClusterDocument.from_updates([node.doc.full_state()])) == visible(node.doc)
