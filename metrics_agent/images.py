"""The images a node holds, as its record publishes them: compact and bounded.

Every node rewrites its whole record on each refresh, so what it says about its images is
paid for on every write to every peer. An image is published as [id, size, [names]]: the id
cut to ID_CHARS hex characters (96 bits: nobody can make another image with the same prefix,
and the runner checks the whole image it receives against it), the size in bytes, and at
most MAX_NAMES names. The list stops at MAX_IMAGES entries or PUBLISH_BUDGET encoded bytes,
whichever comes first; the caller orders it by what is most worth publishing (named images,
most recently made first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import msgpack

from .wire import WireError

ID_CHARS = 24
MAX_IMAGES = 32
MAX_NAMES = 4
MAX_NAME_CHARS = 255
PUBLISH_BUDGET = 2048  # encoded bytes of the whole list
_ID = re.compile(r"[0-9a-f]{%d}" % ID_CHARS)


@dataclass(frozen=True, slots=True)
class HeldImage:
    id: str  # the first ID_CHARS hex characters of the image id
    size: int
    names: tuple[str, ...] = ()

    def to_wire(self) -> list[Any]:
        return [self.id, self.size, list(self.names)]

    @classmethod
    def from_wire(cls, raw: Any) -> "HeldImage":
        if not isinstance(raw, (list, tuple)) or len(raw) != 3:
            raise WireError("images: each image must be [id, size, [names]]")
        image_id, size, names = raw
        if not isinstance(image_id, str) or not _ID.fullmatch(image_id):
            raise WireError(f"images: id must be {ID_CHARS} lowercase hex characters")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63:
            raise WireError("images: size must be an integer >= 0")
        if (
            not isinstance(names, (list, tuple))
            or len(names) > MAX_NAMES
            or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_CHARS for n in names)
        ):
            raise WireError(f"images: at most {MAX_NAMES} names of up to {MAX_NAME_CHARS} characters")
        return cls(image_id, size, tuple(names))


def short_id(image_id: str) -> str:
    """An image id as published ("sha256:" dropped, cut to ID_CHARS)."""
    return image_id.removeprefix("sha256:")[:ID_CHARS]


def publishable(images: Iterable[HeldImage]) -> tuple[HeldImage, ...]:
    """The images in the order given, trimmed to the record's bounds."""
    chosen: list[HeldImage] = []
    used = 1  # the list header
    for image in images:
        if len(chosen) >= MAX_IMAGES:
            break
        image = HeldImage(
            short_id(image.id),
            image.size,
            tuple(n for n in image.names if len(n) <= MAX_NAME_CHARS)[:MAX_NAMES],
        )
        cost = len(msgpack.packb(image.to_wire()))
        if used + cost > PUBLISH_BUDGET:
            break
        chosen.append(image)
        used += cost
    return tuple(chosen)


def images_from_wire(raw: Any) -> tuple[HeldImage, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_IMAGES:
        raise WireError(f"images: expected a list of at most {MAX_IMAGES}")
    return tuple(HeldImage.from_wire(item) for item in raw)
