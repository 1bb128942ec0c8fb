"""The loopback cluster harness (simulations/cluster.py): real formd processes (and Serf agents)
started, measured and stopped, through the module's API and through `python -m simulations.cluster`,
leaving no process behind — checked by pid and start time, so formd processes of tests running
beside this one are never mistaken for ours. Timings are checked for sanity only (present,
ordered, finite), never against a speed goal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from simulations.cluster import main as cluster_main
from simulations.loopback.formd_cluster import STOP_GRACE_S, leftovers
from simulations.loopback.harness import Harness, Options
from simulations.loopback.workload import Step, WorkloadError, load_workload, parse_fault

REPO = Path(__file__).resolve().parents[2]
UPCASE_C = REPO / "tests" / "wasm" / "upcase.c"
EXAMPLE = REPO / "simulations" / "workloads" / "wasm-kill.toml"


def check_shares(figures: dict, observers: int) -> None:
    """One change's or one fault's figures: everyone saw it, and 50% <= 99% <= all."""
    assert figures["observers"] == observers and figures["saw"] == observers, figures
    assert 0 <= figures["p50_s"] <= figures["p99_s"] <= figures["all_s"] < 60, figures


def check_convergence(convergence: dict, samples: int, nodes: int) -> None:
    assert convergence["samples"] == samples == len(convergence["changes"])
    for change in convergence["changes"]:
        check_shares(change, nodes)
    assert (
        0 <= convergence["p50_s"] <= convergence["p99_s"] <= convergence["all_s"] <= convergence["all_s_max"]
    )


# ---- workload files and schedules (no processes) -------------------------------------------------


def test_the_example_workload_parses_into_submits_faults_a_label_and_a_wait():
    steps = load_workload(EXAMPLE, 5)
    assert [s.do for s in steps] == ["submit", "kill", "submit", "label", "wait", "restart"]
    assert steps[0].node == "any" and steps[0].count == 6 and steps[0].wasm_c == UPCASE_C
    assert steps[0].inputs == (REPO / "simulations" / "workloads" / "words.txt",)
    assert steps[1].is_fault and steps[1].at_s == 4.0 and steps[1].node == 2
    assert steps[3].set_labels == {"zone": "b"}


def test_a_fault_option_is_node_at_time():
    assert parse_fault("2@10s", "kill", 5) == Step(do="kill", at_s=10.0, node=2)
    assert parse_fault("0@1500ms", "term", 3) == Step(do="term", at_s=1.5, node=0)
    for text, message in (
        ("2", "NODE@TIME"),
        ("5@1s", "from 0 to 4"),
        ("x@1s", "from 0 to 4"),
        ("1@soon", "duration"),
    ):
        with pytest.raises(WorkloadError, match=message):
            parse_fault(text, "kill", 5)


@pytest.mark.parametrize(
    "body, message",
    [
        ("", "no \\[\\[step\\]\\] tables"),
        ("[[step]\ndo = 1", "not valid TOML"),
        ('jobs = 3\n[[step]]\ndo = "wait"', "unknown top-level key"),
        ('[[step]]\ndo = "dance"', "`do` must be one of"),
        ('[[step]]\ndo = "kill"\nnode = 7', "node must be an index from 0 to 2"),
        ('[[step]]\ndo = "kill"\nnode = 1\ncount = 2', "unknown key\\(s\\) for kill: count"),
        ('[[step]]\ndo = "wait"\ntimeout = "soon"', "timeout: duration"),
        ('[[step]]\ndo = "label"\nnode = 1', "needs `set` or `remove`"),
        ('[[step]]\ndo = "label"\nnode = 1\nset = {zone = 3}', "table of strings"),
        ('[[step]]\ndo = "submit"\nargs = ["--kind", "wasm"]', "exactly one of `context`"),
        ('[[step]]\ndo = "submit"\ncontext = "missing-dir"', "is not a directory"),
        ('[[step]]\ndo = "submit"\nwasm_c = "missing.c"', "is not a file"),
        ('[[step]]\ndo = "submit"\ncontext = "."\ncount = 0', "count must be"),
        ('[[step]]\ndo = "submit"\ncontext = "."\nargs = "--kind wasm"', "args must be a list"),
        ('[[step]]\ndo = "submit"\ncontext = "."\ninputs = ["nope.txt"]', "input 'nope.txt' is not a file"),
        ('[[step]]\ndo = "wait"\nat = "-3s"', "at"),
    ],
)
def test_a_bad_workload_is_refused_with_its_reason(tmp_path, body, message):
    path = tmp_path / "w.toml"
    path.write_text(body)
    with pytest.raises(WorkloadError, match=message):
        load_workload(path, 3)


def test_a_missing_workload_file_is_refused():
    with pytest.raises(WorkloadError, match="No such file"):
        load_workload(Path("/nonexistent/w.toml"), 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nodes", "1"], "--nodes must be from 2"),
        (["--kill", "9@1s"], "node must be an index"),
        (["--steady", "0s"], "--steady must be more than 0"),
        (["--set", "novalue"], "write KEY=VALUE"),
        (["--workload", "/nonexistent/w.toml"], "No such file"),
        (["--delay", "5ms"], "--delay and --loss need --netns"),
        (["--loss", "150%"], "--loss must be from 0% to below 100%"),
        (["--loss", "3x"], "write a share such as 1%"),
        (["--delay", "soon"], "--delay:"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_start_nothing(tmp_path, capsys, argv, message):
    root = tmp_path / "root"
    assert cluster_main([*argv, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cluster: ") and message in err and err.count("\n") == 1
    assert not root.exists()  # nothing was initialised


# ---- real processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_api_runs_three_nodes_with_jobs_and_a_kill_and_leaves_nothing_behind(tmp_path):
    workload = tmp_path / "w.toml"
    (tmp_path / "in.txt").write_text("three nodes\n")
    workload.write_text(f"""
[[step]]
do = "submit"
node = 0
count = 2
wasm_c = "{UPCASE_C}"
inputs = ["in.txt"]
args = ["--kind", "wasm", "--module", "upcase.wasm", "--cmd", "in.txt"]

[[step]]
do = "wait"
timeout = "60s"
""")
    steps = load_workload(workload, 3) + [parse_fault("2@1s", "kill", 3)]
    root = tmp_path / "run"
    harness = Harness(
        Options(
            nodes=3,
            profile="fast",
            changes=2,
            steady_s=1.0,
            steps=steps,
            drain_s=60,
            root=root,
            say=lambda text: None,
        )
    )
    try:
        report = harness.run()
    finally:
        assert leftovers(harness.processes) == []
    assert "error" not in report
    assert [p["kind"] for p in report["processes"]] == ["formd"] * 3
    assert not root.exists()  # state removed without --keep
    assert (
        report["shutdown"]["formd"] == {"graceful": 2, "killed": 0} and report["shutdown"]["left_behind"] == 0
    )

    assert report["started_s"] > 0
    check_convergence(report["convergence"], 2, 3)
    assert report["bytes_per_node_per_s"] > 0 and report["bytes"]["received_per_node_per_s"] > 0
    (kill,) = report["failure_detection"]["kill"]
    assert kill["node"] == "n2"
    check_shares(kill["dead"], 2)
    check_shares(kill["suspect"], 2)
    assert kill["suspect"]["all_s"] <= kill["dead"]["all_s"]
    jobs = report["jobs"]
    assert (
        jobs["submitted"],
        jobs["succeeded"],
        jobs["lost"],
        jobs["duplicates"],
        jobs["submit_errors"],
    ) == (2, 2, 0, 0, 0)
    assert jobs["drained"] is True
    assert [s["ok"] for s in report["workload"]["steps"]] == [True, True, True]


def started_pids(stdout: str) -> list[int]:
    return [
        int(word.split("=", 1)[1])
        for line in stdout.splitlines()
        if line.startswith("started ")
        for word in line.split()
        if word.startswith("pid=")
    ]


@pytest.mark.slow
def test_the_command_line_with_serf_writes_the_report_and_leaves_nothing_behind(tmp_path):
    out, root = tmp_path / "out", tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.cluster",
            "--nodes",
            "3",
            "--profile",
            "fast",
            "--changes",
            "2",
            "--steady",
            "1s",
            "--serf",
            "--report",
            str(out),
            "--root",
            str(root),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert sorted(p["kind"] for p in report["processes"]) == ["formd"] * 3 + ["serf"] * 3
    assert leftovers(report["processes"]) == []
    assert len(started_pids(done.stdout)) == 6
    assert not root.exists()
    check_convergence(report["convergence"], 2, 3)
    check_convergence(report["serf"]["convergence"], 2, 3)
    (formd_kill,) = report["failure_detection"]["kill"]
    check_shares(formd_kill["dead"], 2)
    (serf_kill,) = report["serf"]["failure_detection"]["kill"]
    check_shares(serf_kill["failed"], 2)
    comparison = report["comparison"]
    for key in ("label_change_all_s", "label_change_p50_s", "kill_detected_all_s"):
        item = comparison[key]
        assert item["ratio"] == round(item["formd"] / item["serf"], 2)
    assert "suspect" in comparison["explanation"]["formd"] and "probe" in comparison["explanation"]["serf"]
    assert "formd / serf:" in done.stdout and "kill -9 -> dead/failed on all" in done.stdout


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_removes_the_state(tmp_path):
    root = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulations.cluster",
            "--nodes",
            "3",
            "--profile",
            "fast",
            "--steady",
            "120s",
            "--root",
            str(root),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("converged") for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        pids = started_pids("".join(lines))
        assert len(pids) == 3
        started = [{"pid": pid, "create_time": psutil.Process(pid).create_time()} for pid in pids]
        process.send_signal(
            signal.SIGINT
        )  # what Ctrl-C sends (formd runs in its own session, so only the harness)
        # The harness gives the nodes STOP_GRACE_S to leave, then kills stragglers (10 s wait each).
        assert process.wait(STOP_GRACE_S + 10 * len(pids) + 30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "interrupted; every process stopped" in process.stderr.read()
    assert leftovers(started) == []
    assert not root.exists()


def test_the_report_directory_gets_report_json_even_when_a_run_fails(tmp_path, capsys):
    """A formd.toml override formd refuses: the run fails at `formd init`, with formd's reason."""
    out, root = tmp_path / "out", tmp_path / "run"
    assert (
        cluster_main(["--nodes", "2", "--set", "gossip_fanout=0", "--report", str(out), "--root", str(root)])
        == 1
    )
    err = capsys.readouterr().err
    assert "gossip_fanout" in err
    report = json.loads((out / "report.json").read_text())
    assert report["error"] == "run did not complete" and report["shutdown"]["left_behind"] == 0
    assert not root.exists()
