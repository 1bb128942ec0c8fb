"""Progress bars of large uploads and downloads: drawn on a terminal (a pseudo-terminal here),
locally and with --remote, and never with --json or when the output is piped."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest
from procs import FORM, Cluster, wait_until

pytestmark = pytest.mark.slow

BIG = 5 * 1024 * 1024  # over cli/progress.py's SHOW_FROM


def in_terminal(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a command with stdin, stdout and stderr on a fresh pseudo-terminal; its exit status
    and everything it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not data:
                break
            chunks.append(data)
        return process.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


@pytest.fixture(scope="module")
def node_and_key(tmp_path_factory, wasm_context):
    root = tmp_path_factory.mktemp("progress")
    with Cluster(root / "nodes") as cluster:
        a = cluster.add("a")
        wait_until(lambda: len(a.nodes()) == 1, 30, "the node to be up")
        key = root / "client.key"
        a.grant_new_client_key(key, "submit")
        (root / "big.txt").write_bytes(b"progress bar text\n" * (BIG // 18 + 1))
        yield a, key, root / "big.txt"


def _targets(a, key):
    fingerprint = a.call("status")["tls_fingerprint"]
    return {
        "local": [*FORM, "--socket", str(a.socket)],
        "remote": [*FORM, "--remote", a.http_url, "--key", str(key), "--fingerprint", fingerprint],
    }


def _submit_args(wasm_context, big):
    return [
        "submit",
        str(wasm_context / "context"),
        "--kind",
        "wasm",
        "--module",
        "upcase.wasm",
        "--input",
        str(big),
        "--cmd",
        big.name,
        "--wait",
    ]


@pytest.mark.parametrize("where", ["local", "remote"])
def test_a_large_upload_and_download_draw_a_bar_on_a_terminal(node_and_key, wasm_context, tmp_path, where):
    a, key, big = node_and_key
    form = _targets(a, key)[where]
    status, text = in_terminal([*form, *_submit_args(wasm_context, big)])
    assert status == 0, text
    assert f"upload {big.name}" in text and "MiB" in text and "━" in text
    printed = re.search(r"([0-9a-f]{32,})\r?\n", text)  # the id, printed before --wait's state
    assert printed, text
    job = printed.group(1)
    status, text = in_terminal([*form, "result", job, "-o", str(tmp_path / "out")])
    assert status == 0, text
    assert "download outputs.tar" in text and "━" in text
    assert (tmp_path / "out" / f"{big.name}.upper").read_bytes() == big.read_bytes().upper()


@pytest.mark.parametrize("where", ["local", "remote"])
def test_no_bar_with_json_or_when_piped(node_and_key, wasm_context, tmp_path, where):
    a, key, big = node_and_key
    form = _targets(a, key)[where]
    status, text = in_terminal([*form, *_submit_args(wasm_context, big), "--json"])
    assert status == 0, text
    assert "upload" not in text and "━" not in text
    job = json.loads(text)["id"]
    piped = subprocess.run(
        [*form, "result", job, "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and piped.stdout == f"fetched 1 output(s) into {tmp_path / 'out'}\n"
