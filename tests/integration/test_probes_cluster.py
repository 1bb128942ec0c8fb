"""Real formd processes: a kill -9 is found by probes (suspicion in the document -> dead),
with the heartbeat-silence backstop set so slow that it cannot be what found it."""

import pytest
from procs import Cluster, all_see, wait_until

pytestmark = pytest.mark.slow

# Record refresh every 0.2 s x 3 / 0.01 = 60 s: the silence backstop (suspect after 5 x 60 s,
# dead after 3 x that) would take 15 minutes; probes take a few seconds.
SLOW_REFRESH = {"record_refresh_rate": "0.01"}


def test_kill9_is_found_by_probes_before_the_backstop_could(tmp_path):
    with Cluster(tmp_path) as cluster:
        a = cluster.add("a", settings=SLOW_REFRESH)
        b = cluster.add("b", seed=a, settings=SLOW_REFRESH)
        c = cluster.add("c", seed=a, settings=SLOW_REFRESH)
        ids = [a.node_id, b.node_id, c.node_id]
        wait_until(lambda: all_see([a, b, c], ids), 20, "all three alive everywhere")
        wait_until(
            lambda: all(n["last_probe_ack_age_s"] is not None for n in a.nodes() if not n["self"]),
            20,
            "a to have probed b and c",
        )
        c.kill()
        wait_until(lambda: all_see([a, b], [c.node_id], "dead"), 30, "a and b to mark c dead")
        for observer in (a, b):
            entry = {n["id"]: n for n in observer.nodes()}[c.node_id]  # through `form nodes --json`
            assert entry["suspected_by"] >= 1
            assert (
                entry["last_heartbeat_age_s"] < 5 * 60
            )  # silent for less than the backstop's suspect timeout
            # The status above applies timeouts the moment it is asked; the log line comes with
            # the next tick (tick_interval, 1 s).
            wait_until(
                lambda: "peer suspect" in observer.log_text() and "peer dead" in observer.log_text(),
                5,
                "the suspect and dead lines in the log",
            )
        assert any("probe failed" in node.log_text() for node in (a, b))
        assert {n["id"]: n["status"] for n in a.nodes()}[b.node_id] == "alive"
        assert a.call("status")["probes_sent"] > 0
