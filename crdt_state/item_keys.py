"""Which map entries an update changes, told from its bytes and the items we hold.

Why: pycrdt tells the changed keys through map events, and reading an event's keys costs
O(writers) (~50-135 us at 2000 writers, measured; one writer per node start), on every update
received. An update's bytes say it too: an item written without origins names its root map
and key; an item written after another (an overwrite: its origin is the value it replaced)
has that item's key, which we know if we hold that item in this index; a delete names item
ids. This keeps, for the items we hold, id -> (map, key), for the last KEPT_PER_KEY items of
each key (what the next overwrite or delete of that key names, when its writer is in step).

Exact or nothing: a key is only ever taken from the bytes or from an item whose own key was
(yrs gives an item its origin's map key the same way), never guessed. When anything cannot
be told (an origin or deleted item not in the index, a shared type, a long delete range as
every anti-entropy diff carries) the answer is None and the document asks pycrdt's events.
"""

from __future__ import annotations

import bisect

from crdt_state.update_structs import Id, Item, UpdateStructs

KEPT_PER_KEY = 3
MAX_DELETE_SPAN = 16  # longer delete ranges (diffs carry the whole delete set): ask pycrdt

Entry = tuple[str, str]  # (map name, key)


class ItemKeys:
    def __init__(self, map_names: tuple[str, ...]) -> None:
        self._map_names = frozenset(map_names)
        self._keys: dict[Id, Entry] = {}
        self._recent: dict[Entry, list[Id]] = {}
        self.ready = False  # built from the document's full state on first use

    def build(self, full: UpdateStructs | None) -> None:
        """Index every one-clock item of a full state (None: one the reader cannot describe,
        so nothing is indexed and every update goes to pycrdt until the next build)."""
        self._keys.clear()
        self._recent.clear()
        self.ready = True
        if full is None:
            return
        # Origins name the last clock of the item before; in a full state, deleted neighbours
        # may be merged into runs of many clocks, so look ids up by range.
        starts: dict[int, list[int]] = {}
        runs: dict[int, list[int]] = {}  # client -> item indexes, by clock
        for index, item in enumerate(full.items):
            starts.setdefault(item.id[0], []).append(item.id[1])
            runs.setdefault(item.id[0], []).append(index)
        resolved: dict[int, Entry] = {}

        def index_of(ref: Id) -> int | None:
            clocks = starts.get(ref[0])
            if not clocks:
                return None
            at = bisect.bisect_right(clocks, ref[1]) - 1
            if at < 0:
                return None
            index = runs[ref[0]][at]
            item = full.items[index]
            return index if item.id[1] <= ref[1] < item.id[1] + item.length else None

        progress = True
        while progress:  # an item's origin may come later in the encoding (another writer)
            progress = False
            for index, item in enumerate(full.items):
                if index in resolved:
                    continue
                entry = self._direct(item)
                if entry is None:
                    ref = item.origin or item.right
                    target = index_of(ref) if ref is not None else None
                    entry = resolved.get(target) if target is not None else None
                if entry is not None:
                    resolved[index] = entry
                    progress = True
        for index, entry in resolved.items():
            item = full.items[index]
            if item.length == 1:
                self._add(item.id, entry)

    def changed(self, structs: UpdateStructs, clocks: dict[int, int]) -> set[Entry] | None:
        """The entries applying `structs` can change (new items' keys, deleted items' keys),
        given our clocks before it; None when that cannot be told exactly."""
        resolved: dict[Id, Entry] = {}
        entries: set[Entry] = set()
        for item in structs.items:
            entry = self._entry_of(item, resolved)
            new = item.id[1] + item.length > clocks.get(item.id[0], 0)
            if entry is None:
                if new:
                    return None
                continue  # held already: pycrdt skips it; items naming it cannot be told
            if item.length == 1:
                resolved[item.id] = entry
            if new:
                entries.add(entry)
        for client, ranges in structs.deletes.items():
            held = max(clocks.get(client, 0), structs.writers.get(client, (0, 0))[1])
            for clock, length in ranges:
                end = min(clock + length, held)  # clocks we do not hold: a pending delete, no change yet
                if end - clock > MAX_DELETE_SPAN:
                    return None
                for deleted in range(clock, end):
                    entry = resolved.get((client, deleted)) or self._keys.get((client, deleted))
                    if entry is None:
                        return None
                    entries.add(entry)
        return entries

    def learn(self, structs: UpdateStructs) -> None:
        """Index the items of an update now integrated (those whose key can be told)."""
        resolved: dict[Id, Entry] = {}
        for item in structs.items:
            entry = self._entry_of(item, resolved)
            if entry is not None and item.length == 1:
                resolved[item.id] = entry
                if item.id not in self._keys:
                    self._add(item.id, entry)

    def _entry_of(self, item: Item, resolved: dict[Id, Entry]) -> Entry | None:
        entry = self._direct(item)
        if entry is not None:
            return entry
        ref = item.origin or item.right
        if ref is None:
            return None
        return resolved.get(ref) or self._keys.get(ref)

    def _direct(self, item: Item) -> Entry | None:
        if item.origin is None and item.right is None and isinstance(item.parent, str):
            if item.parent in self._map_names and item.key is not None:
                return item.parent, item.key
        return None

    def _add(self, item_id: Id, entry: Entry) -> None:
        self._keys[item_id] = entry
        recent = self._recent.setdefault(entry, [])
        recent.append(item_id)
        if len(recent) > KEPT_PER_KEY:
            self._keys.pop(recent.pop(0), None)
