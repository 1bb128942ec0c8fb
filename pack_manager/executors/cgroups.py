"""Direct cgroup access on the local host, for two things the Podman API does not give us.

1. Knowing that a container was OOM-killed. Podman 4.3 reads conmon's "oom" marker from the
   container's bundle directory, but conmon 2.1.6 writes it into its own working directory
   (inherited from whoever started podman), so State.OOMKilled is never set here. We
   register our own cgroup v1 OOM eventfd (the same mechanism conmon uses), or read
   memory.events on cgroup v2, while the container exists.
2. Stopping a build at once. Closing the build request makes Podman cancel the build only
   between steps; a RUN step runs on. Builds get a cgroup parent of their own, and on
   cancel every process in it is killed.

Both need Podman on this host and root; everything here is best effort and says so.
"""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _v1_memory_dir(pid: int) -> Path | None:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidate = CGROUP_ROOT / "memory" / path.lstrip("/")
            return candidate if candidate.is_dir() else None
    return None


def _v2_dir(pid: int) -> Path | None:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            candidate = CGROUP_ROOT / line[3:].lstrip("/")
            if (candidate / "memory.events").is_file():
                return candidate
    return None


class OomWatch:
    """Counts OOM kills in the cgroup of a (created, not yet started) container's process."""

    def __init__(self, pid: int) -> None:
        self._event_fd: int | None = None
        self._control_fd: int | None = None
        self._v2_events: Path | None = None
        self._v1_dir = _v1_memory_dir(pid) if pid > 0 else None
        self._v2_seen = 0
        self._oom_seen_v1 = False
        if self._v1_dir is not None:
            self._arm_v1(self._v1_dir)
        elif pid > 0:
            v2 = _v2_dir(pid)
            if v2 is not None:
                self._v2_events = v2 / "memory.events"
                self._v2_seen = self._read_v2()

    @property
    def armed(self) -> bool:
        return self._event_fd is not None or self._v2_events is not None

    def _arm_v1(self, directory: Path) -> None:
        try:
            control = os.open(directory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            with open(directory / "cgroup.event_control", "w") as registration:
                registration.write(f"{event} {control}")
        except OSError:
            return
        self._event_fd, self._control_fd = event, control

    def _read_v2(self) -> int:
        try:
            for line in self._v2_events.read_text().splitlines():  # type: ignore[union-attr]
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return self._v2_seen

    def poll(self) -> bool:
        """True when an OOM kill happened since arming. Call while the cgroup still exists,
        and once more after exit (v1 events stay queued on the eventfd)."""
        if self._event_fd is not None:
            ready, _, _ = select.select([self._event_fd], [], [], 0)
            if not ready:
                return self._oom_seen_v1
            try:
                count = os.eventfd_read(self._event_fd)
            except BlockingIOError:
                return self._oom_seen_v1
            # A removed cgroup also signals once; only a count beyond that is an OOM.
            removed = self._v1_dir is not None and not (self._v1_dir / "cgroup.event_control").exists()
            if count > (1 if removed else 0):
                self._oom_seen_v1 = True
            return self._oom_seen_v1
        if self._v2_events is not None:
            return self._read_v2() > self._v2_seen
        return False

    def close(self) -> None:
        for fd in (self._event_fd, self._control_fd):
            if fd is not None:
                os.close(fd)
        self._event_fd = self._control_fd = None


def cgroup_dirs(parent: str) -> list[Path]:
    """Every directory that exists for a cgroup parent name, across v1 controllers and v2."""
    name = parent.strip("/")
    found = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        candidates = [CGROUP_ROOT / name]
    else:
        candidates = [entry / name for entry in CGROUP_ROOT.iterdir() if entry.is_dir()]
    for candidate in candidates:
        if candidate.is_dir():
            found.append(candidate)
    return found


def limit_pids(parent: str, pids_max: int) -> bool:
    """Create a cgroup parent's pids cgroup with pids.max set, so everything started under it
    (a build's RUN steps) counts against one limit; False when this host does not allow it."""
    name = parent.strip("/")
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    directory = CGROUP_ROOT / name if v2 else CGROUP_ROOT / "pids" / name
    try:
        directory.mkdir(exist_ok=True)
        (directory / "pids.max").write_text(str(pids_max))
    except OSError:
        return False
    return True


def cgroup_parents(prefix: str) -> set[str]:
    """The names of the top-level cgroups starting with prefix, across v1 controllers and v2."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        roots = [CGROUP_ROOT]
    else:
        roots = [entry for entry in CGROUP_ROOT.iterdir() if entry.is_dir()]
    found = set()
    for root in roots:
        try:
            found.update("/" + entry.name for entry in root.iterdir() if entry.name.startswith(prefix))
        except OSError:
            continue
    return found


def _walk(directory: Path, file_name: str | None = None) -> list[Path]:
    """The sub-directories under `directory` (or the files called `file_name` in them and in it).
    os.walk, not Path.rglob: cgroups of exiting processes vanish while we walk, and rglob
    raises FileNotFoundError for a directory gone between listing and entering it."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):  # os.walk skips directories it cannot list
        if file_name is None:
            found.extend(Path(root) / d for d in dirs)
        elif file_name in files:
            found.append(Path(root) / file_name)
    return found


def kill_cgroup(parent: str) -> int:
    """SIGKILL every process under a cgroup parent; returns how many were signalled."""
    killed = 0
    for directory in cgroup_dirs(parent):
        for procs in _walk(directory, "cgroup.procs"):
            try:
                pids = [int(line) for line in procs.read_text().split()]
            except (OSError, ValueError):
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
    return killed


def remove_cgroup(parent: str) -> None:
    """Remove what is left of an emptied cgroup parent (deepest first); ignore busy ones."""
    for directory in cgroup_dirs(parent):
        for sub in sorted(_walk(directory), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            directory.rmdir()
        except OSError:
            pass
