"""Find or start the Podman API service formd talks to.

Order: the configured URL (used as is, or None when it does not answer); a service that
is already running at a default socket; otherwise `podman system service --time=0` on
<state dir>/podman.sock, started here and stopped on exit. The service is told to use
runc and cgroupfs explicitly, like the containers.conf written by setup-podman.sh, so it
works on hosts where crun fails (cgroups hybrid mode) even without that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import AsyncIterator

import trio

log = logging.getLogger("formnet.podman")

SOCKET_NAME = "podman.sock"
PID_NAME = "podman-service.pid"
LOG_NAME = "podman-service.log"
START_TIMEOUT_S = 20.0


def default_socket_urls() -> list[str]:
    urls = []
    if os.getuid() == 0:
        urls.append("unix:///run/podman/podman.sock")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    urls.append(f"unix://{runtime_dir}/podman/podman.sock")
    return urls


def ping(url: str, timeout: float = 2.0) -> bool:
    """True when a Podman API answers /_ping at url (blocking, short timeout)."""
    if url.startswith("unix://") and not Path(url[len("unix://") :]).exists():
        return False
    try:
        from podman import PodmanClient

        with PodmanClient(base_url=url, timeout=timeout) as client:
            return bool(client.ping())
    except Exception:  # any failure means "not usable"; the caller reports it
        return False


def find_running_service() -> str | None:
    for url in default_socket_urls():
        if ping(url):
            return url
    return None


def service_command(socket_path: Path) -> list[str]:
    podman = shutil.which("podman")
    if podman is None:
        raise FileNotFoundError("podman is not installed (packaging/setup-host.sh installs it)")
    command = [podman]
    if shutil.which("runc"):
        command += ["--runtime", "runc"]
    command += ["--cgroup-manager", "cgroupfs", "system", "service", "--time=0", f"unix://{socket_path}"]
    return command


def no_new_privileges(command: list[str]) -> list[str]:
    """The command under `setpriv --no-new-privs`, so everything the service starts has it:
    build RUN steps get it only this way (the build API refuses that security option); run
    containers ask for it themselves as well."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--no-new-privs", *command] if setpriv else command


def start_service(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the service on <state_dir>/podman.sock and wait until it answers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    socket_path = state_dir / SOCKET_NAME
    _stop_stale(state_dir)
    socket_path.unlink(missing_ok=True)
    url = f"unix://{socket_path}"
    with open(state_dir / LOG_NAME, "ab") as service_log:
        # Its own session: a Ctrl-C meant for formd must not kill the service before formd
        # has removed its containers through it. cwd is the state dir: conmon drops files
        # ("oom" markers) into its working directory.
        process = subprocess.Popen(
            no_new_privileges(service_command(socket_path)),
            stdout=service_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=state_dir,
        )
    (state_dir / PID_NAME).write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if ping(url, timeout=1.0):
            return process, url
        time.sleep(0.05)
    stop_service(process, state_dir)
    raise RuntimeError(f"podman system service did not come up on {socket_path}; see {state_dir / LOG_NAME}")


def stop_service(process: subprocess.Popen[bytes], state_dir: Path) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    (state_dir / PID_NAME).unlink(missing_ok=True)
    (state_dir / SOCKET_NAME).unlink(missing_ok=True)


def _stop_stale(state_dir: Path) -> None:
    """A service left by a formd that was killed -9: stop it if it is still ours."""
    pid_file = state_dir / PID_NAME
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    if any(part.endswith(b"podman") for part in cmdline[:1]) and b"service" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def podman_service(state_dir: Path, configured_url: str | None) -> AsyncIterator[str | None]:
    """Yield a usable Podman URL, or None when Podman is unusable on this node."""
    if configured_url:
        if await trio.to_thread.run_sync(ping, configured_url):
            yield configured_url
        else:
            log.warning(
                "podman: the configured podman_url %s does not answer; the podman executor is off",
                configured_url,
            )
            yield None
        return
    running = await trio.to_thread.run_sync(find_running_service)
    if running:
        yield running
        return
    try:
        process, url = await trio.to_thread.run_sync(start_service, state_dir)
    except (OSError, RuntimeError) as exc:
        log.warning("podman: cannot start the API service (%s); the podman executor is off", exc)
        yield None
        return
    log.info("podman: started the API service on %s (pid %d)", url, process.pid)
    try:
        yield url
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stop_service, process, state_dir)
