"""`make demo`, the README's first command: three real formd nodes on this host, a build and a
WASM job, results fetched through another node. It runs here as `make demo` runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_to_the_end_with_three_nodes_on_one_host(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "simulations.demo"],
        cwd=tmp_path,  # the demo keeps its cluster in ./demo-cluster
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Every node sees every other one" in out
    assert "wasm-result/words.txt.upper: PEER TO PEER, NO LEADER" in out
    assert out.count("state: succeeded") == 2  # the build (status on b) and the WASM job (on c)
    cluster = tmp_path / "demo-cluster"
    for name in "abc":
        assert "formd stopped" in (cluster / name / "formd.log").read_text()  # left on SIGTERM
    assert any((cluster / "build-result").iterdir())
