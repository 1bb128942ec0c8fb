"""Build the local base image jobs build FROM: busybox-static in a tiny root filesystem.

No container registry is reachable, so `podman import` makes the image from a tar we
write here: /bin/busybox with its applets linked, /etc/passwd and /etc/group (root and
nobody, so jobs can run as 65534), /tmp and the /data mount points. Idempotent: an image
built from the same busybox binary is left alone.

    python -m pack_manager.base_image [--url unix:///path/podman.sock] [--force]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import blake3

BASE_IMAGE = "localhost/formnet/busybox:latest"
BUSYBOX = Path("/bin/busybox")
SOURCE_LABEL = "formnet.base.busybox"

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


class BaseImageError(RuntimeError):
    pass


def rootfs_tar(busybox: Path = BUSYBOX) -> bytes:
    data = busybox.read_bytes()
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("data", 0o755),
            ("data/inputs", 0o755),
            ("data/outputs", 0o777),
        ):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            archive.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        archive.addfile(info, io.BytesIO(data))
        for applet in sorted(set(applets) - {"busybox"}):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            archive.addfile(link)
        for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            body = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o644
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def busybox_digest(busybox: Path = BUSYBOX) -> str:
    return blake3.blake3(busybox.read_bytes()).hexdigest()


def _changes(digest: str) -> list[str]:
    return [
        'CMD ["/bin/sh"]',
        "ENV PATH=/bin",
        "WORKDIR /",
        f"LABEL {SOURCE_LABEL}={digest}",
    ]


def _existing_label(url: str | None) -> str | None:
    if url:
        from podman import PodmanClient
        from podman.errors import ImageNotFound

        with PodmanClient(base_url=url) as client:
            try:
                image = client.images.get(BASE_IMAGE)
            except ImageNotFound:
                return None
            return (image.labels or {}).get(SOURCE_LABEL)
    found = subprocess.run(["podman", "image", "inspect", BASE_IMAGE], capture_output=True, text=True)
    if found.returncode != 0:
        return None
    labels = (json.loads(found.stdout)[0].get("Config") or {}).get("Labels") or {}
    return labels.get(SOURCE_LABEL)


def _remove_old(url: str | None) -> None:
    if url:
        from podman import PodmanClient
        from podman.errors import APIError, ImageNotFound

        with PodmanClient(base_url=url) as client:
            try:
                client.images.remove(BASE_IMAGE)
            except (ImageNotFound, APIError):
                pass  # absent, or in use by a container: then it stays, still tagged by id
        return
    subprocess.run(["podman", "rmi", BASE_IMAGE], capture_output=True)


def ensure_base_image(url: str | None = None, busybox: Path = BUSYBOX, force: bool = False) -> str:
    """Build BASE_IMAGE unless one from this busybox exists. Returns the image name."""
    if not busybox.is_file():
        raise BaseImageError(f"{busybox} is missing: install busybox-static (packaging/setup-host.sh)")
    digest = busybox_digest(busybox)
    if not force and _existing_label(url) == digest:
        return BASE_IMAGE
    tar = rootfs_tar(busybox)
    _remove_old(url)  # else the old image stays behind untagged
    if url:
        from podman import PodmanClient

        with PodmanClient(base_url=url) as client:
            response = client.api.post(
                "/images/import",
                params={"reference": BASE_IMAGE, "changes": _changes(digest)},
                data=tar,
                headers={"Content-Type": "application/x-tar"},
            )
            if response.status_code >= 400:
                raise BaseImageError(f"podman import failed: {response.text.strip()}")
        return BASE_IMAGE
    if shutil.which("podman") is None:
        raise BaseImageError("podman is not installed (packaging/setup-host.sh installs it)")
    command = ["podman", "import"]
    for change in _changes(digest):
        command += ["--change", change]
    command += ["-", BASE_IMAGE]
    done = subprocess.run(command, input=tar, capture_output=True)
    if done.returncode != 0:
        raise BaseImageError(f"podman import failed: {done.stderr.decode(errors='replace').strip()}")
    return BASE_IMAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Build {BASE_IMAGE} from busybox-static with podman import."
    )
    parser.add_argument("--url", help="Podman API URL (default: the podman CLI and its local storage)")
    parser.add_argument("--busybox", type=Path, default=BUSYBOX)
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if an image from this busybox exists"
    )
    args = parser.parse_args(argv)
    try:
        name = ensure_base_image(args.url, args.busybox, args.force)
    except (BaseImageError, OSError, subprocess.CalledProcessError) as exc:
        print(f"base image: {exc}", file=sys.stderr)
        return 1
    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
