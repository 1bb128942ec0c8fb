"""A Podman API service with an image store of its own, inside one host's network namespace.

Each simulated host has what a real machine has: its own images, containers and runtime
state (`podman --root/--runroot/--tmpdir` under one directory), so an image one host holds is
absent on the others. The service runs under `nsenter --net`, so its containers belong to that
host's network.

Settings come from the host's formnet Podman config (packaging/setup-podman.sh: runc, cgroupfs,
ulimits), handed over as this store's own containers.conf with one addition: file locks in the
store's tmpdir. Podman's default lock is one shared-memory segment per machine, and a service
on a fresh runroot re-creates that segment, which would pull the locks from under every other
Podman on the machine.

close() stops the service, unmounts what the overlay driver left mounted and removes the
directory and the runroot; containers() says what is left in the store before that (a clean run leaves none).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

from pack_manager.podman_service import ping, service_command

FORMNET_CONF = Path("/etc/containers/containers.conf.d/50-formnet.conf")
START_TIMEOUT_S = 30.0


class PodmanStoreError(RuntimeError):
    pass


def store_conf(base: Path = FORMNET_CONF) -> str:
    """containers.conf for one store: the host's formnet settings plus file locks."""
    try:
        settings = tomllib.loads(base.read_text())
    except FileNotFoundError:
        raise PodmanStoreError(f"{base} is missing: run `make host` (packaging/setup-podman.sh)") from None
    settings.setdefault("engine", {})["lock_type"] = "file"
    lines = []
    for table, values in settings.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class PodmanStore:
    def __init__(self, directory: Path, enter: list[str], runroot: Path) -> None:
        self.directory = directory
        self.runroot = runroot  # Podman refuses a runroot path longer than 50 characters
        self.enter = enter  # the command prefix into the host's network namespace
        self.socket = directory / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.conf = directory / "containers.conf"
        self.process: subprocess.Popen | None = None

    @property
    def storage_args(self) -> list[str]:
        d = self.directory
        return ["--root", str(d / "root"), "--runroot", str(self.runroot), "--tmpdir", str(d / "tmp")]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(store_conf())
        command = service_command(self.socket)
        command[1:1] = self.storage_args  # global options go before the subcommand
        with open(self.directory / "service.log", "ab") as log:
            # cwd: conmon drops files ("oom" markers) into its working directory.
            self.process = subprocess.Popen(
                [*self.enter, *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.directory,
                env=self.env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            if ping(self.url, timeout=1.0):
                return self.url
            time.sleep(0.05)
        log_tail = (self.directory / "service.log").read_text(errors="replace").strip()[-600:]
        raise PodmanStoreError(f"podman service did not answer on {self.socket}: {log_tail}")

    def podman(self, *args: str) -> subprocess.CompletedProcess:
        """The podman CLI on this store (same root, same settings) in the host's network, where
        a container's network lives when it has one."""
        return subprocess.run(
            [*self.enter, "podman", *self.storage_args, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def containers(self) -> list[str]:
        """Names of every container in this store, running or not."""
        done = self.podman("ps", "--all", "--format", "{{.Names}}")
        if done.returncode != 0:
            raise PodmanStoreError(f"podman ps: {done.stderr.strip()}")
        return done.stdout.split()

    def images(self) -> list[str]:
        done = self.podman("images", "--format", "{{.Repository}}:{{.Tag}}")
        if done.returncode != 0:
            raise PodmanStoreError(f"podman images: {done.stderr.strip()}")
        return done.stdout.split()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # A job's container outlives a formd killed mid-run; it and its conmon go first.
            self.podman("rm", "--all", "--force", "--time", "0")
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for place in (self.directory, self.runroot):
            for mount in reversed(mounts_under(place)):
                subprocess.run(["umount", "-l", mount], capture_output=True)
            shutil.rmtree(place, ignore_errors=True)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory`, in mount order (the overlay driver bind-mounts its
    own directory, and a container's shm stays mounted while the container exists)."""
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found
