"""formd.toml socket_group: members of the group reach the control socket (as admin), other
users do not, and nothing else in the state dir opens to them; log_format = "json"."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest
from procs import Cluster, wait_until

pytestmark = pytest.mark.slow

# The system Python, which any user may run (the project's venv lives under root's home).
ASK_STATUS = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except OSError as exc:
        print("refused", exc.errno); sys.exit(0)
    s.sendall(b'{"method": "status"}\\n')
    print(s.makefile().readline().strip())
    """
)


@pytest.fixture
def users():
    suffix = secrets.token_hex(3)
    group, member, outsider = f"formg{suffix}", f"formm{suffix}", f"formo{suffix}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "--no-create-home", "-G", group, member], check=True)
    subprocess.run(["useradd", "--no-create-home", outsider], check=True)
    try:
        yield group, member, outsider
    finally:
        for user in (member, outsider):
            subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)


def as_user(user: str, socket_path) -> str:
    result = subprocess.run(
        [
            "setpriv",
            "--reuid",
            user,
            "--regid",
            user,
            "--init-groups",
            "/usr/bin/python3",
            "-c",
            ASK_STATUS,
            str(socket_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def reachable_dir():
    """A folder other users may pass through (pytest's own tmp tree is 0700 all the way up)."""
    path = Path(tempfile.mkdtemp(prefix="formnet-group-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_members_of_socket_group_reach_the_socket_and_others_do_not(reachable_dir, users):
    group, member, outsider = users
    with Cluster(reachable_dir) as cluster:
        node = cluster.add(
            "a", settings={"socket_group": group, "executors": '["wasm"]', "log_format": "json"}
        )
        reply = json.loads(as_user(member, node.socket))
        assert reply["ok"] and reply["result"]["id"] == node.node_id
        assert as_user(outsider, node.socket).startswith("refused 13")  # EACCES
        state_mode = node.state_dir.stat().st_mode & 0o777
        assert state_mode & 0o077 == 0o010  # the group may pass through, nobody may list it
        for secret in ("node.key", "cluster.key", "https.key"):
            assert (node.state_dir / secret).stat().st_mode & 0o077 == 0, secret
        wait_until(lambda: "formd started" in node.log_text(), 20, "the start line")
        lines = [json.loads(line) for line in node.log_text().splitlines() if line.startswith("{")]
        started = next(line for line in lines if line["message"] == "formd started")
        assert started["id"] == node.node_id and started["level"] == "info" and started["time"].endswith("Z")
        assert os.stat(node.socket).st_gid == int(
            subprocess.run(["getent", "group", group], capture_output=True, text=True).stdout.split(":")[2]
        )
