"""The replicated cluster document: signed records, checked sync, and its store on disk.

Pure except persistence.py; imports none of the other formnet packages.
"""

from crdt_state.document import ApplyResult, ClusterDocument, DocumentError
from crdt_state.persistence import DocumentStore, StoreError
from crdt_state.records import NodeRecord, SignedEntry, open_node_record
from crdt_state.signing import RecordError, node_id_of, open_record, seal_record

__all__ = [
    "ApplyResult",
    "ClusterDocument",
    "DocumentError",
    "DocumentStore",
    "NodeRecord",
    "RecordError",
    "SignedEntry",
    "StoreError",
    "node_id_of",
    "open_node_record",
    "open_record",
    "seal_record",
]
