"""Whom to probe next (pure): memberlist's shuffled round robin, seeded by the node's Random.

Every candidate is probed once per round, in an order shuffled afresh each round, so a
failed node is probed by each peer within one round and, cluster-wide, within about one
probe interval (n observers each probing a random one of n). A candidate seen for the first
time goes in at a random place of the current round (memberlist inserts new members the same
way) rather than waiting for the next round; one that is gone (dead, left, forgotten) is
skipped when its turn comes.
"""

from __future__ import annotations

import random
from typing import Hashable, Iterable, TypeVar

T = TypeVar("T", bound=Hashable)


class ProbeOrder:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._round: list = []
        self._known: set = set()

    def next(self, candidates: Iterable[T]) -> T | None:
        """The next candidate to probe, or None when there is none."""
        current = set(candidates)
        for fresh in sorted(current - self._known, key=repr):  # sorted: same rng draws every run
            self._round.insert(self._rng.randint(0, len(self._round)), fresh)
        self._known = current  # one that left and comes back is put in again
        while True:
            while self._round:
                chosen = self._round.pop(0)
                if chosen in current:
                    return chosen
            if not current:
                return None
            self._round = sorted(current, key=repr)
            self._rng.shuffle(self._round)
            self._known = set(current)
