"""A local image with python3 for job tests: the busybox base image's files plus this host's
python3 (its binary, the shared libraries it links and the standard library without tests
and GUI parts), made with `podman import`: no registry is reachable. The caller removes it."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from pack_manager.base_image import rootfs_tar

SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "site-packages"}


def _linked_libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.append(Path(path))
    return found


def python_rootfs_tar() -> bytes:
    binary = Path(os.path.realpath("/usr/bin/python3"))  # Debian's: its stdlib is /usr/lib/<name>
    stdlib = Path("/usr/lib") / binary.name
    with tarfile.open(fileobj=io.BytesIO(rootfs_tar()), mode="r") as base:
        members = [(m, base.extractfile(m).read() if m.isfile() else None) for m in base.getmembers()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in members:
            archive.addfile(member, io.BytesIO(data) if data is not None else None)

        def add(path: Path, arcname: str) -> None:
            archive.add(path, arcname=arcname, recursive=False)

        for library in _linked_libraries(binary):
            add(Path(os.path.realpath(library)), str(library).lstrip("/"))
        add(binary, "usr/bin/python3")  # under /usr: python finds its stdlib from there
        for root, dirs, files in os.walk(stdlib):
            dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith("config-")]
            for name in files:
                path = Path(root) / name
                add(path, str(path).lstrip("/"))
    return out.getvalue()


def make_python_image(name: str) -> str:
    """Import the image as `name`; returns it."""
    subprocess.run(
        ["podman", "import", "--change", "ENV PATH=/usr/bin:/bin", "--change", 'CMD ["/bin/sh"]', "-", name],
        input=python_rootfs_tar(),
        capture_output=True,
        check=True,
    )
    return name
