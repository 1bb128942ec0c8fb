"""One signature check per record for the whole simulated cluster, not one per node.

Every node verifies every record it receives (Ed25519, then msgpack decoding and the node
record's schema): with N nodes each heartbeat is verified N times, which made signature
checks the largest single cost of a simulated second. Opening an envelope is a pure
function of its bytes, so every simulated node would compute the same answer; the
simulation computes it once and shares it (refusals included, re-raised as fresh errors).

Only that pure step is shared. What depends on a node's own state (is the signer known to
it, is the record older than the one it holds, does the update fit its document) is still
decided by each node's own ClusterDocument. The shared results are read-only for the node
code (record bodies are never modified in place).

Handed to every simulated node's ClusterDocument as its `openers` (crdt_state/records.py
Openers: the real functions, wrapped); one cache per run, bounded (oldest entries go first).
"""

from __future__ import annotations

from typing import Any, Callable

from crdt_state.records import DIRECT, Openers
from crdt_state.signing import RecordError

MAX_ENTRIES = 20_000  # ~20 s of heartbeats at 1000 nodes: repeats arrive within seconds


class SharedCache:
    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self.entries: dict[Any, Any] = {}
        self.hits = 0
        self.misses = 0
        self.openers = Openers(self.wrap(DIRECT.open_record), self.wrap(DIRECT.open_node))

    def wrap(self, opener: Callable[..., Any]) -> Callable[..., Any]:
        def cached(envelope: bytes, *args: Any) -> Any:
            key = (bytes(envelope), opener, args)
            found = self.entries.get(key)
            if found is None:
                self.misses += 1
                try:
                    found = opener(envelope, *args)
                except RecordError as exc:
                    found = exc
                if len(self.entries) >= self.limit:
                    del self.entries[next(iter(self.entries))]
                self.entries[key] = found
            else:
                self.hits += 1
            if isinstance(found, RecordError):
                raise type(found)(found.reason)
            return found

        return cached
