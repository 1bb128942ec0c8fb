"""Image references as a job names them, matched against what nodes publish (pure).

A job says `--image NAME[:TAG]`, a full `registry/path:tag`, or an image id. Podman stores
names fully qualified: a build tagged `tool:1` is `localhost/tool:1`, a pull of `busybox` is
`docker.io/library/busybox:latest`. A node publishes those stored names, so a reference
matches a published image when one of its possible full names is among the image's names,
or when it is an id (12 hex characters or more) sharing the published id prefix.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from metrics_agent.images import HeldImage

PULL_POLICIES = ("missing", "always", "never")
DEFAULT_PULL = "missing"
LOCAL_DOMAIN = "localhost"
DEFAULT_REGISTRY = "docker.io"
_HEX_ID = re.compile(r"(sha256:)?([0-9a-f]{12,64})")


def image_id_of(reference: str) -> str | None:
    """The hex id when the reference is an image id (12 to 64 hex characters), else None."""
    match = _HEX_ID.fullmatch(reference)
    return match.group(2) if match else None


def _split(reference: str) -> tuple[str | None, str, str]:
    """(domain or None, path, ':tag' or '@digest' or '')."""
    name, at, digest = reference.partition("@")
    suffix = "@" + digest if at else ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if not at and colon > slash:
        name, suffix = name[:colon], name[colon:]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == LOCAL_DOMAIN):
        return first, rest, suffix
    return None, name, suffix


def full_names(reference: str) -> tuple[str, ...]:
    """The stored names a reference may stand for, most likely first (empty for an id)."""
    if image_id_of(reference) is not None:
        return ()
    domain, path, suffix = _split(reference)
    suffix = suffix or ":latest"
    if domain is not None:
        return (f"{domain}/{path}{suffix}",)
    hub_path = path if "/" in path else f"library/{path}"
    return (f"{LOCAL_DOMAIN}/{path}{suffix}", f"{DEFAULT_REGISTRY}/{hub_path}{suffix}")


def registry_name(reference: str) -> str | None:
    """The name to pull from a registry, or None when no registry can have it (an id, or an
    image named under localhost, which only builds and loads make)."""
    names = full_names(reference)
    if not names:
        return None
    candidate = names[-1]  # for a short name, the Docker Hub spelling (what `podman pull` picks)
    return None if candidate.startswith(LOCAL_DOMAIN + "/") else candidate


def matches(reference: str, image: HeldImage) -> bool:
    hex_id = image_id_of(reference)
    if hex_id is not None:
        return hex_id[: len(image.id)] == image.id[: len(hex_id)]
    return any(name in image.names for name in full_names(reference))


def find_image(reference: str, images: Iterable[HeldImage]) -> HeldImage | None:
    return next((image for image in images if matches(reference, image)), None)


def image_holders(reference: str, held: Mapping[bytes, Iterable[HeldImage]]) -> dict[bytes, HeldImage]:
    """node id -> the image it publishes under this reference."""
    found = {}
    for node_id, images in held.items():
        image = find_image(reference, images)
        if image is not None:
            found[node_id] = image
    return found
