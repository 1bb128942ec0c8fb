"""What an update holds, read from its bytes (lib0 v1, as pycrdt encodes it) without a document.

Why: the questions asked of every update received (does it skip clocks we lack? does it build
on items we lack? did it bring anything new? where does each writer's clock stand after it?)
were answered with pycrdt calls that take or produce our whole state vector, one entry per
writer, i.e. per node start: 2000 at a 1000-node cluster, ~85 us per call, 3-4 calls per
update. With each writer's (first clock, end clock) and every item's references read here,
the document answers them from its own per-writer clock map in O(size of the update).

Only what formd's documents hold is read: items with deleted, JSON, binary, string, embed,
format, Any and subdocument contents and GC structs. Anything else (skips, shared-type
contents, a newer encoding) gives None, and the caller asks pycrdt the slow way: the reader
never decides that an update is bad, only whether it can describe it.
"""

from __future__ import annotations

from dataclasses import dataclass

Id = tuple[int, int]  # (client, clock)


@dataclass(frozen=True)
class Item:
    id: Id
    length: int  # clocks it spans
    origin: Id | None  # the item it was inserted after: its map key is this one's
    right: Id | None  # the item it was inserted before
    parent: str | Id | None  # a root's name or a shared type's item; None when origins say it
    key: str | None  # the map key, written out only when there are no origins
    deleted: bool  # written as deleted content


@dataclass(frozen=True)
class UpdateStructs:
    # writer -> (clock of its first struct, clock after its last struct)
    writers: dict[int, tuple[int, int]]
    # (item, an id it needs to integrate: left origin, right origin or parent item)
    references: list[tuple[Id, Id]]
    # writer -> [(clock, length)] of the items this update deletes
    deletes: dict[int, list[tuple[int, int]]]
    items: list[Item]  # every item, in the update's order (GC structs left out)


class _Unreadable(Exception):
    pass


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def uint(self) -> int:
        data, at = self.data, self.at
        value = shift = 0
        while True:
            if at >= len(data) or shift > 63:
                raise _Unreadable
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.at = at
                return value
            shift += 7

    def skip_signed(self) -> None:
        data, at = self.data, self.at
        while True:
            if at >= len(data):
                raise _Unreadable
            byte = data[at]
            at += 1
            if byte < 0x80:
                self.at = at
                return

    def raw(self, length: int) -> bytes:
        end = self.at + length
        if end > len(self.data):
            raise _Unreadable
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def string(self) -> str:
        try:
            return self.raw(self.uint()).decode("utf-8")
        except UnicodeDecodeError:
            raise _Unreadable from None

    def skip_any(self) -> None:
        kind = self.raw(1)[0]
        if kind in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if kind == 125:
            self.skip_signed()
        elif kind == 124:
            self.raw(4)
        elif kind in (123, 122):
            self.raw(8)
        elif kind in (119, 116):  # string, bytes
            self.raw(self.uint())
        elif kind == 118:  # object
            for _ in range(self.uint()):
                self.raw(self.uint())
                self.skip_any()
        elif kind == 117:  # array
            for _ in range(self.uint()):
                self.skip_any()
        else:
            raise _Unreadable


def _content_length(reader: _Reader, kind: int) -> int:
    """Read an item's content; return how many clocks it spans."""
    if kind == 1:  # deleted
        return reader.uint()
    if kind == 2:  # JSON strings
        count = reader.uint()
        for _ in range(count):
            reader.raw(reader.uint())
        return count
    if kind == 3:  # binary
        reader.raw(reader.uint())
        return 1
    if kind == 4:  # string: one clock per UTF-16 code unit
        return len(reader.string().encode("utf-16-le")) // 2
    if kind == 5:  # embed
        reader.raw(reader.uint())
        return 1
    if kind == 6:  # format: key, value
        reader.raw(reader.uint())
        reader.raw(reader.uint())
        return 1
    if kind == 8:  # Any values
        count = reader.uint()
        for _ in range(count):
            reader.skip_any()
        return count
    if kind == 9:  # subdocument: guid, options
        reader.raw(reader.uint())
        reader.skip_any()
        return 1
    raise _Unreadable  # 7 (shared type), 10 (skip) and anything newer


def read_update(update: bytes) -> UpdateStructs | None:
    """Each writer's clock range, every item's references and the delete set; None when the
    bytes are not an update this reader describes (pycrdt is then asked instead)."""
    reader = _Reader(update)
    writers: dict[int, tuple[int, int]] = {}
    references: list[tuple[Id, Id]] = []
    deletes: dict[int, list[tuple[int, int]]] = {}
    items: list[Item] = []
    try:
        for _ in range(reader.uint()):
            structs = reader.uint()
            client = reader.uint()
            start = clock = reader.uint()
            if client in writers:
                return None
            for _ in range(structs):
                info = reader.raw(1)[0]
                kind = info & 0x1F
                if kind == 0:  # GC: a range of collected items, no references
                    clock += reader.uint()
                    continue
                item = (client, clock)
                origin = right = parent = key = None
                if info & 0x80:
                    origin = (reader.uint(), reader.uint())
                    references.append((item, origin))
                if info & 0x40:
                    right = (reader.uint(), reader.uint())
                    references.append((item, right))
                if not info & 0xC0:  # no origins: the parent is written out
                    if reader.uint() == 1:
                        parent = reader.string()  # a root's name
                    else:
                        parent = (reader.uint(), reader.uint())
                        references.append((item, parent))
                    if info & 0x20:
                        key = reader.string()  # the map key
                length = _content_length(reader, kind)
                if length <= 0:
                    return None
                items.append(Item(item, length, origin, right, parent, key, kind == 1))
                clock += length
            writers[client] = (start, clock)
        for _ in range(reader.uint()):
            client = reader.uint()
            ranges = deletes.setdefault(client, [])
            for _ in range(reader.uint()):
                ranges.append((reader.uint(), reader.uint()))
    except _Unreadable:
        return None
    if reader.at != len(update):
        return None
    return UpdateStructs(writers, references, deletes, items)
