"""The workload model across 3 real formd processes through the real `form` CLI: label
selectors, named capabilities with concurrency slots, region, placement keys."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from procs import Cluster, all_see, wait_until
from procs import job_status as status
from wasm_jobs import LOOP_FOREVER, submit_wasm

from daemon.config import load as load_config
from pack_manager.placement import rank, ranking_id

pytestmark = pytest.mark.slow
LLAMA = "inference:llama3"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("workload")) as cluster:
        seed = cluster.add(
            "a", labels=["zone=a", "gpus=1"], init_args=["--region", "eu", "--capability", f"{LLAMA}=2"]
        )
        cluster.add("b", seed=seed, labels=["zone=b", "gpus=4"], init_args=["--region", "us"])
        cluster.add("c", seed=seed, labels=["zone=c"], init_args=["--region", "eu"])
        ids = [n.node_id for n in cluster.nodes]
        wait_until(lambda: all_see(cluster.nodes, ids), 30, "all three nodes to see each other")
        yield cluster


def final(node, job_id: str) -> dict:
    return wait_until(
        lambda: (s := status(node, job_id))["state"] in ("succeeded", "failed", "unschedulable") and s,
        60,
        f"job {job_id[:12]} to end",
    )


def test_selectors_choose_the_node_and_name_the_failed_requirement(cluster, wasm_context):
    a, b, c = cluster.nodes[:3]
    job_id = submit_wasm(a, wasm_context, "--select", "zone in (b,c)", "--select", "gpus>=2").stdout.strip()
    seen = final(c, job_id)
    assert (seen["state"], seen["node"]) == ("succeeded", b.node_id)

    job_id = submit_wasm(a, wasm_context, "--select", "zone notin (b), gpus>1", "--label", "zone=a").stdout
    seen = final(b, job_id.strip())
    assert seen["state"] == "unschedulable"
    assert sorted(seen["reasons"]) == sorted(
        [
            f"node {a.node_id[:12]}: select gpus>1: node has '1'",
            f"node {b.node_id[:12]}: label zone: needs 'a', node has 'b'; select zone notin (b): node has 'b'",
            f"node {c.node_id[:12]}: label zone: needs 'a', node has 'c'; select gpus>1: node has no such label",
        ]
    )

    refused = submit_wasm(a, wasm_context, "--select", "gpus>many", check=False)
    assert refused.returncode == 1
    assert "select 'gpus>many': > compares whole numbers" in refused.stderr
    assert json.loads(a.form("jobs", "--json").stdout)  # formd still answers


def loop_context(tmp_path: Path, name: str = "loop") -> Path:
    context = tmp_path / name
    context.mkdir()
    (context / "loop.wat").write_text(f";; {name}\n{LOOP_FOREVER}")
    return context


def submit_loop(node, context: Path, *extra: str) -> str:
    return node.form("submit", str(context), "--kind", "wasm", "--module", "loop.wat", *extra).stdout.strip()


def most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The largest number of [start, end] intervals that overlap (ISO times sort as text)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_capability_slots_are_respected_under_concurrent_submits(cluster, tmp_path):
    a, b, c = cluster.nodes[:3]
    # From two nodes at once (one context each); only a offers the capability.
    contexts = [loop_context(tmp_path, f"loop{i}") for i in range(5)]
    with ThreadPoolExecutor(5) as pool:
        ids = list(
            pool.map(
                lambda node, context: submit_loop(node, context, "--capability", LLAMA, "--timeout", "5s"),
                [b, c, b, c, b],
                contexts,
            )
        )

    def someone_waits_for_a_slot():
        jobs = b.call("job.list", {})
        return any(
            "capability inference:llama3: 2 of 2 in use" in j["reason"] for j in jobs if j["id"] in ids
        )

    wait_until(someone_waits_for_a_slot, 60, "a job to wait for a capability slot")
    published = wait_until(
        lambda: next(n for n in b.call("nodes") if n["id"] == a.node_id)["capacity"].get(
            "capabilities_in_use"
        ),
        30,
        "b to see a's slots in use",
    )
    assert 1 <= published[LLAMA] <= 2
    table = c.form("nodes").stdout
    assert "inference:llama3" in table and "eu" in table
    ended = [
        wait_until(lambda j=j: (s := status(c, j))["state"] == "timed_out" and s, 90, "the loops to time out")
        for j in ids
    ]
    assert {s["node"] for s in ended} == {a.node_id}
    assert most_at_once([(s["started_at"], s["finished_at"]) for s in ended]) == 2


def test_region_limits_where_a_job_runs(cluster, wasm_context):
    a, b, c = cluster.nodes[:3]
    seen = final(a, submit_wasm(a, wasm_context, "--region", "us").stdout.strip())
    assert (seen["state"], seen["node"]) == ("succeeded", b.node_id)
    seen = final(c, submit_wasm(a, wasm_context, "--region", "mars").stdout.strip())
    assert seen["state"] == "unschedulable"
    assert all("region: needs 'mars'" in reason for reason in seen["reasons"])


def test_capabilities_set_at_runtime_are_persisted_published_and_removable(cluster, wasm_context):
    a, b, c = cluster.nodes[:3]
    assert c.form("capability", "set", "video:h264", "--max", "1").stdout.strip() == "video:h264=1"
    assert load_config(c.state_dir).named_capabilities == {"video:h264": 1}
    wait_until(
        lambda: next(n for n in a.nodes() if n["id"] == c.node_id)["capabilities"].get("named"),
        30,
        "a to see c's capability",
    )
    seen = final(b, submit_wasm(a, wasm_context, "--capability", "video:*").stdout.strip())
    assert (seen["state"], seen["node"]) == ("succeeded", c.node_id)

    refused = c.form("capability", "set", "video h264", "--max", "1", check=False)
    assert refused.returncode == 1 and "not a capability name" in refused.stderr
    assert c.form("capability", "remove", "video:h264").stdout.strip() == "(no capabilities)"
    assert load_config(c.state_dir).named_capabilities == {}
    wait_until(
        lambda: not next(n for n in a.nodes() if n["id"] == c.node_id)["capabilities"].get("named"),
        30,
        "a to see c's capability gone",
    )
    seen = final(a, submit_wasm(a, wasm_context, "--capability", "video:*").stdout.strip())
    assert seen["state"] == "unschedulable"
    assert (
        f"node {c.node_id[:12]}: capability video:*: node does not offer it (offers none)" in seen["reasons"]
    )


def test_jobs_sharing_a_placement_key_land_on_the_same_node(cluster, wasm_context):
    a, b, c = cluster.nodes[:3]
    ids = [bytes.fromhex(n.node_id) for n in (a, b, c)]
    # Two keys whose first-ranked node differs, so the test shows the key (not chance) decides.
    keys = {}
    for number in range(50):
        keys.setdefault(rank(ranking_id(b"", f"dataset-{number}"), ids)[0].hex(), f"dataset-{number}")
    assert len(keys) >= 2
    for runner, key in list(keys.items())[:2]:
        jobs = [submit_wasm(node, wasm_context, "--placement-key", key).stdout.strip() for node in (a, b, c)]
        assert {final(a, job_id)["node"] for job_id in jobs} == {runner}
        explained = json.loads(b.form("explain", jobs[0], "--json").stdout)
        assert explained["placement_key"] == key
        assert explained["nodes"][0]["node"] == runner


HELLO = Path(__file__).parents[2] / "examples" / "hello-wasm" / "job.toml"


def test_a_job_file_runs_with_flags_overriding_it(cluster):
    a, b, c = cluster.nodes[:3]
    job_id = a.form("submit", "--spec", str(HELLO), "--select", "zone=c").stdout.strip()
    seen = final(b, job_id)
    assert (seen["state"], seen["node"], seen["kind"]) == ("succeeded", c.node_id, "wasm")
    assert b.form("logs", job_id).stdout == "hello from formnet\n"


def test_a_bad_job_file_is_refused_naming_the_key_and_writes_nothing(cluster, tmp_path):
    a = cluster.nodes[0]
    before = a.call("job.records")
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "wasm"\nmodule = "x.wat"\ncolour = "red"\n')
    refused = a.form("submit", "--spec", str(bad), check=False)
    assert refused.returncode == 1 and "unknown key 'colour'" in refused.stderr
    bad.write_text('kind = "wasm"\nmodule = "x.wat"\nmemory = "lots"\n')
    refused = a.form("submit", "--spec", str(bad), check=False)
    assert refused.returncode == 1 and "memory" in refused.stderr
    assert a.call("job.records") == before


def test_a_dry_run_prints_the_ranked_table_and_writes_nothing(cluster):
    a, b, c = cluster.nodes[:3]
    blobs = sorted(p.name for p in (a.state_dir / "blobs").rglob("*"))
    before = a.call("job.records")
    plan = json.loads(
        a.form(
            "submit",
            "--spec",
            str(HELLO),
            "--dry-run",
            "--json",
            "--select",
            "zone!=a",
            "--placement-key",
            "k",
        ).stdout
    )
    assert [row["rank"] for row in plan["nodes"]] == [1, 2, 3]
    ranked = [bytes.fromhex(n.node_id) for n in (a, b, c)]
    assert [row["node"] for row in plan["nodes"]] == [n.hex() for n in rank(ranking_id(b"", "k"), ranked)]
    fits = {row["node"]: (row["fits"], row["fits_now"], row["reasons"]) for row in plan["nodes"]}
    assert fits[a.node_id] == (False, False, ["select zone!=a: node has 'a'"])
    assert fits[b.node_id] == (True, True, []) and fits[c.node_id] == (True, True, [])
    table = a.form("submit", "--spec", str(HELLO), "--dry-run", "--capability", "gpu:*").stdout
    assert table.startswith("dry run: nothing written")
    assert "never" in table and "capability gpu:*: node does not offer it" in table
    assert a.call("job.records") == before
    assert sorted(p.name for p in (a.state_dir / "blobs").rglob("*")) == blobs


EXIT_1 = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 1))))"""


def test_a_failing_job_is_retried_on_each_next_ranked_node(cluster, tmp_path):
    a, b, c = cluster.nodes[:3]
    context = tmp_path / "exit1"
    context.mkdir()
    (context / "exit1.wat").write_text(EXIT_1)
    job_id = a.form(
        "submit",
        str(context),
        "--kind",
        "wasm",
        "--module",
        "exit1.wat",
        "--retries",
        "2",
        "--retry-delay",
        "200ms",
    ).stdout.strip()
    seen = wait_until(
        lambda: (s := status(b, job_id))["state"] == "failed" and len(s["attempts"]) == 3 and s,
        60,
        "three attempts",
    )
    order = [row["node"] for row in json.loads(b.form("explain", job_id, "--json").stdout)["nodes"]]
    assert [(x["attempt"], x["node"], x["state"]) for x in seen["attempts"]] == [
        (1, order[0], "failed"),
        (2, order[1], "failed"),
        (3, order[2], "failed"),
    ]
    assert (seen["node"], seen["attempt"], seen["exit_code"]) == (order[2], 3, 1)


def test_a_job_no_node_starts_fails_at_its_queue_timeout(cluster, wasm_context):
    a, b, _ = cluster.nodes[:3]
    job_id = submit_wasm(
        a, wasm_context, "--capability", "nothing:here", "--queue-timeout", "2s"
    ).stdout.strip()
    seen = wait_until(lambda: (s := status(b, job_id))["state"] == "failed" and s, 60, "the queue timeout")
    assert seen["reason"] == "queue timeout: no run started within 2 s"
    assert [x["state"] for x in seen["attempts"]] == ["failed"] and seen["started_at"] is None


def test_replicas_wait_returns_once_every_replica_has_finished(cluster, wasm_context):
    a = cluster.nodes[0]
    done = submit_wasm(a, wasm_context, "--replicas", "2", "--wait", "--json")
    seen = json.loads(done.stdout)
    assert seen["state"] == "succeeded"
    assert [r["state"] for r in seen["replicas"]] == ["succeeded", "succeeded"]
    assert (seen["verified"], seen["verify_reason"]) == (True, "")
