"""The deterministic simulation (simulations/run.py, simulations/sim/): runs, checks, determinism.

Small clusters so each test stays well under a minute; the figures of big runs come from
`python -m simulations.run` (README "Simulation"), never from assertions here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.run import main
from simulations.sim.heartbeat_doc import heartbeat_growth
from simulations.sim.options import Amount, Partition, SimOptions
from simulations.sim.session import run_session, simulate_once

ROOT = Path(__file__).resolve().parents[2]


def quiet(_line):
    pass


def without_cost(report):
    return {key: value for key, value in report.items() if key != "cost"}


def test_small_cluster_with_loss_and_a_crash_keeps_every_invariant():
    options = SimOptions(
        nodes=20,
        seconds=60,
        seed=3,
        jobs=40,
        loss=0.01,
        crash=Amount(count=1),
        restart=1.0,
        restart_after=25,
        plots=False,
    )
    report, ok = run_session(options, say=quiet)
    assert ok and report["invariants_ok"]
    assert all(section["ok"] and section["count"] == 0 for section in report["invariants"].values())
    jobs = report["jobs"]
    assert jobs["submitted"] == 40 and jobs["not_accepted"] == 0
    assert jobs["succeeded"] + jobs["failed"] == 40 and jobs["lost"] == 0 and jobs["duplicates"] == 0
    assert jobs["succeeded"] >= 35  # 2% of the planned jobs exit non-zero on purpose
    # The crash happened, every survivor marked the node dead, and it came back.
    assert report["faults"]["crashes"] == 1 and report["faults"]["restarts"] == 1
    assert report["failure_detection"]["dead_everywhere_s"]["samples"] == 1
    assert report["traffic"]["messages_lost"] > 0
    # Every probe reached every live node.
    assert report["convergence"]["samples"] == 5
    assert all(probe["saw"] == probe["observers"] for probe in report["convergence"]["probes"])
    assert report["phases_s"]["converge_rounds"] is not None


def test_sharded_jobs_with_a_crash_keep_every_invariant_each_shard_succeeding_once():
    options = SimOptions(
        nodes=12, seconds=60, seed=5, jobs=10, job_shards=3, crash=Amount(count=1), plots=False
    )
    report, ok = run_session(options, say=quiet)
    assert ok and report["invariants_ok"]
    jobs = report["jobs"]  # every shard is checked as a job: final once, never succeeded twice
    assert jobs["submitted"] == 30 and jobs["lost"] == 0 and jobs["duplicates"] == 0
    assert jobs["succeeded"] + jobs["failed"] == 30


def test_wiped_restarts_a_partition_and_a_slow_node_keep_every_invariant():
    """A wiped machine comes back as a new node; the old identity's claims must be taken over."""
    options = SimOptions(
        nodes=8,
        seconds=40,
        quiet=6,
        seed=1,
        jobs=40,
        crash=Amount(count=3),
        restart=1.0,
        restart_after=12,
        wipe=1.0,
        partitions=(Partition(24, 8, 0.25),),
        slow=Amount(count=1),
        loss=0.01,
        plots=False,
    )
    report, ok = run_session(options, say=quiet)
    assert ok, report["invariants"]
    assert (
        report["faults"]["wiped_restarts"] == 3
        and report["faults"]["slow_nodes"]
        and report["faults"]["partitions"]
    )
    jobs = report["jobs"]
    assert jobs["succeeded"] + jobs["failed"] + jobs["lost_with_submitter"] == jobs["submitted"] == 40
    assert jobs["reassignments"] >= 1
    # Every wiped identity is counted as its own node in the placement figures.
    assert sum(report["placement"]["histogram"].values()) == 8 + 3


def test_restarts_that_keep_the_key_but_lose_the_state_keep_every_invariant():
    # Found by this simulation (fixed in daemon/cluster/refutation.py): such a node started again at
    # incarnation 1 while peers kept showing its earlier life's record (stale rule), so they
    # took it for dead while it ran jobs: duplicate successes, views that differed.
    for seed in (1, 2):
        options = SimOptions(
            nodes=8,
            seconds=40,
            quiet=6,
            seed=seed,
            jobs=40,
            crash=Amount(count=3),
            restart=1.0,
            restart_after=12,
            wipe=1.0,
            wipe_keeps_key=True,
            plots=False,
        )
        report, ok = run_session(options, say=quiet)
        assert ok, report["invariants"]
        assert report["faults"]["wiped_restarts"] == 3


def test_slow_nodes_still_declare_a_crashed_node_dead_in_time():
    """A slow node ticks late but keeps formd's failure-detection timeouts, so every crash
    is seen dead everywhere (slow nodes included) before the node comes back."""
    options = SimOptions(
        nodes=10,
        seconds=60,
        quiet=5,
        seed=9,
        crash=Amount(count=2),
        restart=1.0,
        restart_after=30,
        slow=Amount(count=3),
        plots=False,
    )
    report, ok = run_session(options, say=quiet)
    assert ok
    detection = report["failure_detection"]
    assert detection["dead_everywhere_s"]["samples"] == 2
    assert all(c["dead_everywhere_s"] < 30 for c in detection["crashes"])
    assert detection["expected_dead_timeout_s"] <= detection["dead_everywhere_s"]["p50"]


def test_same_seed_same_report_other_seed_other_report():
    options = SimOptions(
        nodes=8,
        seconds=30,
        seed=5,
        jobs=15,
        loss=0.02,
        crash=Amount(count=1),
        quiet=8,
        partitions=(Partition(14, 6),),
        plots=False,
    )
    first, _ = run_session(options, say=quiet)
    second, _ = run_session(options, say=quiet)
    assert "cost" in first and first["cost"]["real_s"] > 0
    assert without_cost(first) == without_cost(second)
    other, _ = run_session(SimOptions(**{**options.__dict__, "seed": 6}), say=quiet)
    assert without_cost(other) != without_cost(first)


def test_same_seed_same_report_across_processes(tmp_path):
    """Separate interpreters with different hash seeds: nothing may depend on hash()."""
    reports = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simulations.run",
                "--nodes",
                "6",
                "--seconds",
                "20s",
                "--quiet",
                "6s",
                "--jobs",
                "8",
                "--crash",
                "1",
                "--loss",
                "2%",
                "--seed",
                "11",
                "--report",
                str(out),
                "--no-plots",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
            timeout=120,
        )
        reports.append(without_cost(json.loads((out / "report.json").read_text())))
    assert reports[0] == reports[1]
    assert reports[0]["jobs"]["submitted"] == 8


def test_the_checker_catches_an_injected_duplicate_success(tmp_path, capsys):
    code = main(
        [
            "--nodes",
            "6",
            "--seconds",
            "20s",
            "--quiet",
            "6s",
            "--jobs",
            "6",
            "--seed",
            "2",
            "--inject",
            "duplicate-success",
            "--report",
            str(tmp_path),
            "--no-plots",
        ]
    )
    assert code == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["invariants_ok"] is False
    assert report["invariants"]["no_duplicate_success"]["count"] == 1
    assert report["jobs"]["duplicates"] == 1
    injected = report["faults"]["injected"][0]
    assert injected.startswith("duplicate-success: n")
    err = capsys.readouterr().err
    assert "INVARIANT BROKEN no_duplicate_success" in err and "no partition separated them" in err
    # Only the broken invariant is reported broken.
    assert [n for n, s in report["invariants"].items() if not s["ok"]] == ["no_duplicate_success"]


def test_the_checker_catches_an_injected_orphan_claim(tmp_path, capsys):
    code = main(
        [
            "--nodes",
            "6",
            "--seconds",
            "20s",
            "--quiet",
            "6s",
            "--jobs",
            "6",
            "--seed",
            "2",
            "--inject",
            "orphan-claim",
            "--report",
            str(tmp_path),
            "--no-plots",
        ]
    )
    assert code == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert [n for n, s in report["invariants"].items() if not s["ok"]] == ["claims_backed"]
    assert "holds an active claim" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--latency", "20ms..1ms"], "--latency"),
        (["--crash", "lots"], "--crash"),
        (["--partition", "30s"], "DURATION@START"),
        (["--partition", "30s@50s"], "past --seconds"),
        (["--loss", "100%"], "--loss"),
        (["--seconds", "soon"], "--seconds"),
        (["--nodes", "0"], "--nodes"),
        (["--job-cpu", "lots"], "--job-cpu"),
        (["--fanout", "0"], "--fanout must be at least 1"),
        (["--tick", "0s"], "--tick must be positive"),
    ],
)
def test_bad_options_are_refused_with_a_reason(args, message, capsys, tmp_path):
    assert main(["--seconds", "60s", *args, "--report", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_a_size_sweep_that_includes_the_main_size_reports_every_size(tmp_path):
    options = SimOptions(
        nodes=4, seconds=6, quiet=6, probes=2, seed=8, sizes=(3, 4), report_dir=tmp_path, plots=True
    )
    report, ok = run_session(options, say=quiet)
    assert ok
    written = json.loads((tmp_path / "report.json").read_text())
    assert set(written["convergence_by_size"]) == {"3", "4"}
    assert written["convergence_by_size"]["4"]["all_s"] == written["convergence"]["all_s"] is not None
    assert (tmp_path / "convergence_vs_size.png").stat().st_size > 0


def test_a_warm_start_begins_with_every_node_knowing_every_node():
    options = SimOptions(
        nodes=12, seconds=10, quiet=6, probes=2, seed=4, jobs=6, warm_start=True, plots=False
    )
    report, ok = run_session(options, say=quiet)
    assert ok and report["jobs"]["succeeded"] + report["jobs"]["failed"] == 6
    # Every node started at once (a restart of a formed cluster) and the boot check passed the
    # first time it looked.
    assert options.join_window == 0.0 and report["phases_s"]["joined_at"] <= 0.001
    # Each node continued the process that wrote its record: no node moved to a new incarnation.
    run, _ = simulate_once(options)
    records = run.world.machines[0].node.document.node_records()
    assert len(records) == 12 and {record.incarnation for record in records.values()} == {1}
    cold, _ = run_session(SimOptions(**{**options.__dict__, "warm_start": False}), say=quiet)
    assert cold["phases_s"]["joined_at"] > report["phases_s"]["joined_at"]


def test_progress_lines_do_not_change_the_run(capsys):
    options = SimOptions(nodes=6, seconds=12, quiet=5, seed=4, jobs=5, plots=False)
    plain, _ = run_session(options, say=quiet)
    watched, _ = run_session(SimOptions(**{**options.__dict__, "progress": True}), say=quiet)
    assert "[sim " in capsys.readouterr().err
    assert without_cost({**plain, "options": None}) == without_cost({**watched, "options": None})


def test_document_only_heartbeat_run_writes_its_growth(tmp_path, capsys):
    assert main(["--doc-only", "--doc-hours", "0.01", "--doc-nodes", "5", "--report", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "document_growth.json").read_text())
    growth = report["document_growth"]
    # formd's record refresh at 5 nodes: every max(1, 5 / 3) = 1.67 s, so on every second tick.
    assert growth["refresh_s"] == 1.6667 and growth["writes"] == 5 * 18 and growth["nodes"] == 5
    sizes = [size for _, size in growth["size_bytes_series_hours"]]
    assert sizes and all(size > 5 * 300 for size in sizes)  # five signed records of a few hundred bytes each
    assert growth["size_bytes_final"] == sizes[-1] and growth["within_goal"] is True
    assert (tmp_path / "document_growth_24h.png").stat().st_size > 0
    assert "bytes after 0.01 h of 5 nodes' heartbeats" in capsys.readouterr().out


def test_document_growth_writes_a_record_when_formd_would():
    every_tick = heartbeat_growth(6, 0.01, seed=2, refresh_s=1.0)
    formd_rule = heartbeat_growth(6, 0.01, seed=2)
    assert every_tick["writes"] == 6 * 36 and every_tick["refresh_rule"] == "given"
    assert formd_rule["refresh_s"] == 2.0 and formd_rule["writes"] == 6 * 18
    assert formd_rule["refresh_rule"] == "formd's refresh_interval(n)"


def test_probes_not_heartbeat_silence_find_a_crashed_node():
    """SWIM probes (daemon/cluster/probes.py) run in the simulation: a crashed node is marked dead by
    every live node well before the heartbeat-silence backstop could have done it."""
    options = SimOptions(
        nodes=12,
        seconds=40,
        quiet=5,
        seed=11,
        crash=Amount(count=1),
        restart=0.0,
        warm_start=True,
        plots=False,
    )
    report, ok = run_session(options, say=quiet)
    assert ok
    detection = report["failure_detection"]
    crash = detection["crashes"][0]
    assert crash["dead_everywhere_s"] is not None
    assert crash["dead_everywhere_s"] < detection["backstop_dead_timeout_s"] / 2
    assert crash["dead_everywhere_s"] >= detection["expected_dead_timeout_s"]


def test_compare_policies_runs_the_same_jobs_under_each_policy(tmp_path):
    options = SimOptions(
        nodes=8,
        seconds=20,
        quiet=4,
        probes=1,
        seed=5,
        jobs=30,
        warm_start=True,
        compare_policies=True,
        report_dir=tmp_path,
        plots=True,
    )
    report, ok = run_session(options, say=quiet)
    assert ok
    by_policy = json.loads((tmp_path / "report.json").read_text())["placement_by_policy"]
    assert set(by_policy) == {"hashed-xor", "xor"}
    assert by_policy["hashed-xor"]["max_over_mean"] == report["placement"]["max_over_mean"]  # the main run's
    for figures in by_policy.values():
        assert figures["submitted"] == 30 and figures["invariants_ok"]
        assert sum(int(jobs) * nodes for jobs, nodes in figures["histogram"].items()) == figures["succeeded"]
    # The same job ids land differently under the other policy.
    assert by_policy["xor"]["histogram"] != by_policy["hashed-xor"]["histogram"]
    assert (tmp_path / "placement_by_policy.png").stat().st_size > 0
