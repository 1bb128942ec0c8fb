"""Who runs a job: every node ranks the candidates on its own view and gets the same order.

Pure and order-independent: the ranking is a function of (job_id, node_id) pairs only,
computed with integers and blake3, never Python's per-process `hash()`. A job submitted with
a placement key ranks by blake3(key) in place of its id (`ranking_id`), so jobs that share a
data key rank the nodes alike and land on the same capable node while it lives and fits.

- `xor`: ascending Kademlia distance int(job_id) ^ int(node_id). Faithful to the original
  plan, but uneven: ids that share high bits with many jobs win many of them.
- `hashed-xor` (default): ascending blake3(DOMAIN + (job_id XOR node_id)). Still a function
  of XOR(build_id, node_id), but each node wins ~1/n of the jobs and a node that leaves
  moves only its own jobs (rendezvous hashing).
"""

from __future__ import annotations

import heapq
from typing import Iterable, Mapping

from blake3 import blake3

POLICIES = ("hashed-xor", "xor")
DEFAULT_POLICY = "hashed-xor"
ID_BYTES = 32
_DOMAIN = b"formnet placement v1\x00"
_KEY_DOMAIN = b"formnet placement key v1\x00"
MAX_KEY_CHARS = 1024


class PlacementError(ValueError):
    """A bad id or an unknown policy."""


def ranking_id(job_id: bytes, key: str | None = None) -> bytes:
    """What the job's ranking XORs node ids with: blake3 of its placement key, else its id."""
    if key is None:
        return job_id
    return blake3(_KEY_DOMAIN + key.encode("utf-8")).digest()


def _check_id(value: bytes, what: str) -> int:
    if not isinstance(value, (bytes, bytearray)) or len(value) != ID_BYTES:
        raise PlacementError(f"{what} must be {ID_BYTES} bytes, got {value!r:.40}")
    return int.from_bytes(value, "big")


def _unique_ids(node_ids: Iterable[bytes]) -> set[bytes]:
    items = node_ids if isinstance(node_ids, (list, tuple, set, frozenset)) else list(node_ids)
    try:
        ids = set(items)
    except TypeError:  # unhashable members such as bytearray: copy, then check below
        ids = {bytes(n) if isinstance(n, bytearray) else n for n in items}
    odd = [n for n in ids if type(n) is not bytes or len(n) != ID_BYTES]  # one cheap pass
    for node_id in odd:
        _check_id(node_id, "node id")  # raises: wrong type or length
    return ids


def _sort_keys(job_id: bytes, ids: Iterable[bytes], policy: str) -> list[bytes]:
    """One bytes key per node, `sort key + node id`, so ties break by node id for free.

    This is the hot path of placement (every node ranks every pending job), so it is one
    comprehension with no per-node function call beyond blake3 itself.
    """
    job = _check_id(job_id, "job id")
    from_bytes = int.from_bytes
    if policy == "hashed-xor":
        return [
            blake3(_DOMAIN + (job ^ from_bytes(n, "big")).to_bytes(ID_BYTES, "big")).digest() + n for n in ids
        ]
    if policy == "xor":
        return [(job ^ from_bytes(n, "big")).to_bytes(ID_BYTES, "big") + n for n in ids]
    raise PlacementError(f"unknown placement policy {policy!r}; use one of {', '.join(POLICIES)}")


def placement_key(job_id: bytes, node_id: bytes, policy: str = DEFAULT_POLICY) -> bytes:
    """The value `rank` sorts by for one node (smaller ranks first); shown by `form explain`."""
    _check_id(node_id, "node id")
    return _sort_keys(job_id, [bytes(node_id)], policy)[0][:ID_BYTES]


def rank(job_id: bytes, node_ids: Iterable[bytes], policy: str = DEFAULT_POLICY) -> list[bytes]:
    """Every node id, best first. Duplicates collapse; input order never matters."""
    keys = _sort_keys(job_id, _unique_ids(node_ids), policy)
    keys.sort()
    return [key[ID_BYTES:] for key in keys]


def top_k(job_id: bytes, node_ids: Iterable[bytes], k: int, policy: str = DEFAULT_POLICY) -> list[bytes]:
    """The first k of `rank` (all of them when fewer than k), without a full sort."""
    if k < 0:
        raise PlacementError(f"k must be ≥ 0, got {k}")
    keys = _sort_keys(job_id, _unique_ids(node_ids), policy)
    return [key[ID_BYTES:] for key in heapq.nsmallest(k, keys)]


def rank_with_preferences(
    job_id: bytes, scores: Mapping[bytes, int], policy: str = DEFAULT_POLICY
) -> list[bytes]:
    """Nodes matching more preferred labels first, the policy's order within each group."""
    ids = _unique_ids(scores)
    keys = _sort_keys(job_id, ids, policy)
    keys.sort(key=lambda key: (-scores[key[ID_BYTES:]], key))
    return [key[ID_BYTES:] for key in keys]


def shard_rotation(order: list[bytes], capable: list[bytes], index: int) -> list[bytes]:
    """The order for shard `index` of a sharded job: the capable nodes (in `order`'s order)
    starting at capable[index mod len(capable)] and wrapping round, then the others. With at
    least N capable nodes the N shards start on N distinct nodes; with fewer they go round
    robin, as the Formation plan says; a shard whose node fails goes on round the same ring."""
    if not capable:
        return list(order)
    start = index % len(capable)
    ring = capable[start:] + capable[:start]
    chosen = set(capable)
    return ring + [n for n in order if n not in chosen]
