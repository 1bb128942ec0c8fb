"""Rotating the cluster key on running nodes with `form cluster-key`, no restart."""

import json

import pytest
from procs import Cluster, Formd, all_see, form, wait_until

from daemon.transport.keyring import Keyring

pytestmark = pytest.mark.slow


def labels_seen(observer, node, labels):
    return {n["id"]: n for n in observer.call("nodes")}[node.node_id]["labels"] == labels


def test_rotation_add_use_remove_keeps_the_cluster_talking(tmp_path):
    with Cluster(tmp_path / "c") as cluster:
        a = cluster.add("a")
        b = cluster.add("b", seed=a)
        wait_until(lambda: all_see([a, b], [a.node_id, b.node_id]), 20, "a and b to meet")
        old_id = Keyring.load(a.key_file).primary_id.hex()

        new_key = tmp_path / "new.key"
        form(a.socket, "cluster-key", "generate", "--output", str(new_key))
        new_id = Keyring.load(new_key).primary_id.hex()

        # 1. add everywhere, 2. use everywhere, 3. remove the old key everywhere
        for node in (a, b):
            assert node.form("cluster-key", "add", str(new_key)).stdout.strip() == new_id
        listed = json.loads(a.form("cluster-key", "list", "--json").stdout)
        assert listed == [{"key_id": old_id, "primary": True}, {"key_id": new_id, "primary": False}]
        for node in (a, b):
            node.form("cluster-key", "use", new_id)
        for node in (a, b):
            node.form("cluster-key", "remove", old_id)
            assert [k.hex() for k in Keyring.load(node.key_file).key_ids()] == [new_id]  # saved

        b.form("label", "set", "rotated=yes")
        wait_until(lambda: labels_seen(a, b, {"rotated": "yes"}), 20, "gossip under the new key")
        assert "bad frame dropped" not in a.log_text() + b.log_text()

        # A node that only has the old key is now shut out.
        stale = Formd(tmp_path / "c" / "stale", "stale")
        cluster.nodes.append(stale)
        stale.init(seeds=[a.address])  # its own fresh key: like holding only a retired one
        stale.start()
        wait_until(lambda: "unknown key" in a.log_text(), 20, "a to refuse the stale node")
        assert stale.node_id not in a.statuses()

        # The rotation survives a restart of a.
        a.stop()
        a.start()
        assert json.loads(a.form("cluster-key", "list", "--json").stdout) == [
            {"key_id": new_id, "primary": True}
        ]
        wait_until(lambda: all_see([a, b], [a.node_id, b.node_id]), 20, "a back with the new key")
