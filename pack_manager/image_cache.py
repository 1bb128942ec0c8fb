"""Which of the images formd added to a node's store to remove, least recently used first (pure).

formd adds images when it loads one from a peer, pulls one from a registry or keeps a build
under its --tag. Those are listed (image id -> last use, size) and held to `budget` bytes
together; images the operator put in the store are never listed, so never removed. An image a
job is using right now is not removed, even over budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True, slots=True)
class CachedImage:
    last_used_ms: int
    size: int


def evictions(
    cached: Mapping[str, CachedImage], budget: int, in_use: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Ids to remove, oldest use first, until the rest fit in `budget` bytes."""
    total = sum(image.size for image in cached.values())
    chosen = []
    for image_id, image in sorted(cached.items(), key=lambda item: (item[1].last_used_ms, item[0])):
        if total <= budget:
            break
        if image_id in in_use:
            continue
        chosen.append(image_id)
        total -= image.size
    return chosen
