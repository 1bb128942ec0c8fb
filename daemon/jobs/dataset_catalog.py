"""The document's datasets map, decoded once per change: which node holds which dataset.

One name stands for one content: replicas of a dataset on several nodes share its digest.
`form dataset add` refuses a different digest under a name already listed, but two nodes may
add one concurrently; then the record added first (then the lower holder id) names the
content, and the others are left out of placement and listed as conflicts, the same on
every node.
"""

from __future__ import annotations

from typing import Callable

from crdt_state.document import ClusterDocument
from pack_manager.datasets import Catalog, DatasetError, DatasetRecord

MAP = "datasets"


class DatasetCatalog:
    def __init__(
        self, document: ClusterDocument, on_bad_record: Callable[[str, str], None] | None = None
    ) -> None:
        self.document = document
        self._on_bad_record = on_bad_record
        self._records: dict[str, DatasetRecord] = {}  # key -> record, removed ones included
        self._seen: dict[str, object] = {}
        self._dirty = True
        self.changed = True  # taken by the job loop: open jobs with datasets are decided again
        self._catalog: dict[str, dict[bytes, DatasetRecord]] | None = None
        self.conflicts: list[DatasetRecord] = []
        document.watch(self._note)

    def _note(self, map_name: str, key: str) -> None:
        if map_name == MAP:
            self._dirty = True

    def take_changed(self) -> bool:
        self._refresh()
        changed, self.changed = self.changed, False
        return changed

    def _refresh(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        entries = self.document.items(MAP)
        for key in list(self._records):
            if key not in entries:
                del self._records[key]
                self._seen.pop(key, None)
        for key, entry in entries.items():
            if self._seen.get(key) is entry:
                continue
            self._seen[key] = entry
            try:
                record = DatasetRecord.from_wire(entry.body, key)
                if record.holder != entry.signer_id:
                    raise DatasetError("dataset record names another holder than its signer")
            except DatasetError as exc:
                self._records.pop(key, None)
                if self._on_bad_record is not None:
                    self._on_bad_record(key, str(exc))
                continue
            self._records[key] = record
        self._catalog = None
        self.changed = True

    def records(self) -> list[DatasetRecord]:
        """Every record, removed ones too (sorted by name, then holder)."""
        self._refresh()
        return sorted(self._records.values(), key=lambda r: (r.name, r.holder))

    def catalog(self) -> Catalog:
        """name -> holder -> record: offered (not removed) and not in conflict."""
        self._refresh()
        if self._catalog is None:
            offered: dict[str, list[DatasetRecord]] = {}
            for record in self._records.values():
                if not record.removed:
                    offered.setdefault(record.name, []).append(record)
            self._catalog, self.conflicts = {}, []
            for name, records in offered.items():
                first = min(records, key=lambda r: (r.added_ms, r.holder))
                self._catalog[name] = {r.holder: r for r in records if r.digest == first.digest}
                self.conflicts += [r for r in records if r.digest != first.digest]
        return self._catalog

    def holders(self, name: str) -> dict[bytes, DatasetRecord]:
        return dict(self.catalog().get(name, {}))

    def digests(self) -> set[str]:
        """Every dataset digest the document names (none of them is ever served)."""
        self._refresh()
        return {record.digest for record in self._records.values()}
