"""Real formd processes on 127.0.0.1: convergence, keys, crash and restart, graceful leave."""

import signal
import tomllib

import pytest
from procs import Cluster, Formd, all_see, wait_until

pytestmark = pytest.mark.slow


def ids(cluster: Cluster) -> list[str]:
    return [node.node_id for node in cluster.nodes[:3]]


def test_three_nodes_with_one_seed_converge(formd_cluster):
    a, b, c = formd_cluster.nodes[:3]
    wait_until(lambda: all_see([a, b, c], ids(formd_cluster)), 20, "every node to see all three alive")
    for node in (a, b, c):
        listed = node.nodes()  # through the real `form nodes --json`
        assert sorted(n["id"] for n in listed) == sorted(ids(formd_cluster))
        for entry in listed:
            assert entry["status"] == "alive"
            assert entry["address"].startswith("127.0.0.1:")
            assert entry["capabilities"]["cpu_millicores"] > 0
            assert "allocatable_memory_bytes" in entry["capacity"]
            assert entry["executors"] == ["wasm"]
        by_id = {n["id"]: n for n in listed}
        assert by_id[a.node_id]["labels"] == {"zone": "a"}


def test_a_label_change_reaches_every_node(formd_cluster):
    a, b, c = formd_cluster.nodes[:3]
    wait_until(lambda: all_see([a, b, c], ids(formd_cluster)), 20, "the cluster to be up")
    c.form("label", "set", "zone=c", "disk=ssd")

    def everyone_sees_it():
        return all(
            {n["id"]: n for n in node.call("nodes")}[c.node_id]["labels"] == {"zone": "c", "disk": "ssd"}
            for node in (a, b)
        )

    wait_until(everyone_sees_it, 20, "the new label on a and b")
    saved = tomllib.loads((c.state_dir / "formd.toml").read_text())
    assert saved["labels"] == {"zone": "c", "disk": "ssd"}


def test_a_node_with_another_cluster_key_never_appears(formd_cluster):
    a, b, c = formd_cluster.nodes[:3]
    # Its own fresh key (--new-cluster-key), but a's address as seed.
    intruder = Formd(formd_cluster.root / "intruder", "intruder")
    formd_cluster.nodes.append(intruder)
    intruder.init(seeds=[a.address])
    intruder.start()
    # It keeps knocking; a refuses each frame (the intruder cannot read a's replies either).
    wait_until(lambda: a.log_text().count("bad frame dropped") >= 3, 20, "a to refuse the intruder's frames")
    wait_until(lambda: a.call("status")["frames_dropped"] >= 3, 10, "a to count the dropped frames")
    for node in (a, b, c):
        assert intruder.node_id not in node.statuses()
    assert list(intruder.statuses()) == [intruder.node_id]
    assert (
        "unknown key" in a.log_text()
        or "key" in a.log_text().split("bad frame dropped", 1)[1].splitlines()[0]
    )
    intruder.kill()


def test_kill9_marks_suspect_then_dead_and_a_restart_comes_back_intact(formd_cluster):
    a, b, c = formd_cluster.nodes[:3]
    wait_until(lambda: all_see([a, b, c], ids(formd_cluster)), 20, "the cluster to be up")
    before = c.call("status")
    c.kill()
    wait_until(lambda: all_see([a, b], [c.node_id], "dead"), 30, "a and b to mark c dead")
    for node in (a, b):
        text = wait_until(
            lambda: f"peer dead id={c.node_id[:12]}" in node.log_text() and node.log_text(), 5, "the log line"
        )
        suspect = text.rfind(f"peer suspect id={c.node_id[:12]}")
        dead = text.rfind(f"peer dead id={c.node_id[:12]}")
        assert 0 <= suspect < dead, "suspect is reported before dead"

    c.start()
    after = c.call("status")
    assert after["id"] == before["id"]
    assert after["incarnation"] > before["incarnation"]
    # Its document survived: right after start it still knows the nodes it knew, and its labels.
    assert after["known_nodes"] >= 3 and after["labels"] == before["labels"]
    wait_until(lambda: all_see([a, b, c], ids(formd_cluster)), 20, "c to be alive again everywhere")
    for node in (a, b):
        wait_until(lambda: f"peer rejoined id={c.node_id[:12]}" in node.log_text(), 5, "the rejoined line")


def test_sigterm_leaves_at_once(formd_cluster):
    a, b, c = formd_cluster.nodes[:3]
    wait_until(lambda: all_see([a, b, c], ids(formd_cluster)), 20, "the cluster to be up")
    b.signal(signal.SIGTERM)
    assert b.wait() == 0
    # Left well before the 1 s suspect timeout could even fire.
    wait_until(lambda: all_see([a, c], [b.node_id], "left"), 10, "a and c to show b as left")
    for node in (a, c):
        text = node.log_text()
        assert f"peer left id={b.node_id[:12]}" in text
        assert f"peer dead id={b.node_id[:12]}" not in text  # no timeout was involved
    assert "left the cluster" in b.log_text()
