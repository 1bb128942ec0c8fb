"""formd and form load their heavy libraries only in the runs that use them.

podman-py (with requests), hypercorn and prometheus_client are most of an idle formd's memory
beyond its core, and httpx, rich and cryptography a good part of a `form` command's start;
pydantic (which typer 0.29 and later load to parse options, hence the pin in pyproject.toml)
costs both.
Each check runs in a fresh interpreter and lists what that run imported, so a top-level
import that brings one of them back fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from procs import formd_init, free_port

# `formd run` as its entry point runs it (option parsing included), stopped by SIGTERM as
# systemd stops it once it serves its socket; then the top-level names of every module the run
# imported.
FORMD_RUN = """
import json, os, signal, sys, threading, time
from pathlib import Path
import daemon.main

state_dir = Path(sys.argv[1])

def stop_when_serving():
    while not (state_dir / "formd.sock").exists():
        time.sleep(0.05)
    time.sleep(0.5)  # the start-up tasks run once (executors, images, gossip)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=stop_when_serving, daemon=True).start()
sys.argv = ["formd", "run", "--state-dir", str(state_dir)]
try:
    daemon.main.main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""

# `form status --json` on a socket nobody serves: option parsing, the command, the client's
# connection attempt and the error path, as a local command runs them.
FORM_STATUS = """
import json, sys
import cli.main
sys.argv = ["form", "--socket", sys.argv[1], "status", "--json"]
try:
    cli.main.main()
except SystemExit as exc:
    assert exc.code == 1, exc.code
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def imported(code: str, *args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("https", [False, True], ids=["https-off", "https-on"])
def test_a_wasm_only_formd_loads_neither_podman_nor_metrics(tmp_path: Path, https: bool) -> None:
    state_dir = tmp_path / "node"
    http_listen = f"127.0.0.1:{free_port()}" if https else ""
    formd_init(
        state_dir,
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--new-cluster-key",
        "--set",
        'executors=["wasm"]',
        "--set",
        f'http_listen="{http_listen}"',
    )
    modules = imported(FORMD_RUN, str(state_dir))
    assert {"trio", "pycrdt", "wasmtime"} <= modules  # it did run, and offered wasm
    assert {"podman", "requests", "urllib3", "prometheus_client", "pydantic"} & modules == set()
    assert ("hypercorn" in modules) == https  # the HTTPS server only when http_listen is set


def test_a_local_form_command_loads_no_remote_or_table_libraries(tmp_path: Path) -> None:
    modules = imported(FORM_STATUS, str(tmp_path / "nobody.sock"))
    assert {"typer", "cli"} <= modules
    assert {"httpx", "rich", "cryptography", "ssl", "pydantic"} & modules == set()
