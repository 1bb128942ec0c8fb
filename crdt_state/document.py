"""The replicated cluster document: six pycrdt maps of signed records, checked before use.

Values are whole signed envelopes (bytes) under hex text keys, never nested maps: a key
rewritten by its one writer stays the same size in pycrdt, nested maps grow per rewrite.

Nothing a peer sends becomes visible before it is checked. A remote update is first applied to
a shadow copy of the document; the map entries it changed are verified there (signature,
signer owns the key, deletes only where allowed, no unknown top-level names, no structs left
waiting for updates we have not seen). Only then is it applied to the real document;
otherwise the whole update is refused and the shadow is rebuilt from the real document. Readers see `views`,
built from entries that passed those checks, so a signature is verified once per value that
arrives, not on every read.

Deviations from the agreed interface (small, additive):
- A node record older (incarnation, heartbeat) than the one held is not shown: readers keep
  the newer one, and the key is listed in `ApplyResult.stale`. The update itself is accepted
  rather than refused. Why: two writes of one key can be concurrent (a restarted node whose
  last writes were lost in a power cut, or a member replaying an old record), and the CRDT
  then shows the same winner everywhere. Refusing would be decided by what each replica held
  before, so replicas that refused would refuse every later diff that carries that item, and
  the cluster would split for good. Accepting keeps the documents converging while no reader
  ever sees a record go backwards.
- `ClusterDocument(local_node_id)`: when that happens to this node's own key, it writes its
  newest record again; the rewrite follows the stale one causally, so it wins on every
  replica and all views agree again.
- `ApplyResult.missing`: True when the update depends on changes we have not received; the
  sync layer answers it with our state vector so the sender fills the gap. An update that
  skips clocks of one of its writers (the usual case: pushes that overtook each other) is
  found before it is applied (crdt_state/update_gaps.py) and refused without touching the
  shadow; other gaps are found in the shadow and cost a rebuild like any refusal (`rebuilds`).

Epidemic push hands every replica each update several times, byte for byte. An update whose
exact bytes were applied here since the last rebuild is answered as a duplicate without
touching the shadow (`_seen`): applying it again could change nothing (structs and deletes
already integrated are skipped; its pending deletes, if any, are already pending). A rebuild
drops pending deletes, so it forgets what was seen.

Readers that keep decoded copies (the job loop) `watch` the document: they are told each
(map, key) whose visible entry changed or went, so they need not walk every map per pass.

Local updates carry only their own transaction (see _local_transaction): an eager push never
deletes anything but what its writer just replaced or retired.

Deletes (retiring finished jobs, DESIGN.md "Growth"): `delete_local` removes keys of jobs, runs
and cancels in one transaction. A remote update that removes a key a reader can see is
accepted only when `may_delete(map_name, key, held_entry)` says so (None, the default, refuses
every delete); a delete in `nodes` is always refused, since liveness and the other maps'
signer checks rest on node records. A key that was never visible here (never received, or
held but failing verification) is not a delete to readers and is accepted.
Why this converges although replicas decide at different moments: the job layer's predicate
is monotone in time ("the job is final and finished long enough ago"): once true for an entry
it stays true. A replica that refuses a delete now keeps the entry and rebuilds its shadow;
the deleting peers keep the delete in their delete set, and pycrdt puts the whole delete set
into every diff (get_update(state_vector)), so the next anti-entropy exchange offers the same
delete again, and it is accepted once the predicate holds. Until then such a replica also
refuses everything else bundled in those diffs, so once it misses one push from a peer that
applied the delete it cannot catch up with that peer (its heartbeats included: the peer goes
suspect, then dead, here). Hence two rules for the predicate:
- decide from the held entry and the local clock alone: records that would make the job look
  final here (a final run this replica never received) arrive already deleted in the same
  diff, so a rule that waits for them would refuse forever;
- whatever the deleter's own rule deletes, receivers must accept, with a margin for clock
  skew (frames already require clocks within +-60 s): e.g. deleters retire a job once final
  and `retention` after it finished, receivers accept once `retention` (minus that margin)
  has passed since the time stamped in the entry held.
Deleted values are garbage-collected by pycrdt; what stays is a tombstone with the item's id,
origin and key text (73 B per deleted job key, measured in tests/test_crdt_deletes.py) until
an epoch compaction starts a fresh document.
"""

from __future__ import annotations

from collections import ChainMap, OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Mapping, MutableMapping

import blake3
import pycrdt
from pycrdt import Doc, Map

from crdt_state.item_keys import ItemKeys
from crdt_state.records import (
    DIRECT,
    MAP_KINDS,
    NodeRecord,
    Openers,
    RecordError,
    SignedEntry,
    StaleRecord,
    verify_entry,
)
from crdt_state.state_vector import decode_state_vector
from crdt_state.update_gaps import clock_gap
from crdt_state.update_structs import UpdateStructs, read_update

MAX_UPDATE = 16 * 1024 * 1024
# Applied updates remembered to answer duplicates cheaply: copies arrive within a few gossip
# rounds of the first. Kept small, since a simulation holds a document per node.
SEEN_UPDATES = 1024
# An update whose changed entries cannot be told from its bytes rebuilds that index (O(document))
# at most once per this many accepted updates; in between, pycrdt's events tell.
REINDEX_AFTER = 500
_MISSING = "update depends on changes not received yet"
MAP_NAMES = tuple(MAP_KINDS)
DELETABLE_MAPS = ("jobs", "runs", "cancels")

# may_delete(map_name, key, entry held for that key) -> allow the remote delete?
DeletePredicate = Callable[[str, str, SignedEntry | None], bool]


class DocumentError(ValueError):
    """Bad input to a document call that is not a record (e.g. an undecodable state vector)."""


@dataclass(frozen=True)
class ApplyResult:
    accepted: bool
    reason: str | None = None
    changed: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # written or deleted
    missing: bool = False
    stale: frozenset[str] = field(default_factory=frozenset)  # node keys whose older record is not shown
    # The update brought items we did not have. False for a duplicate (common with epidemic
    # push): nothing to store or pass on. True with an empty `changed` when it only added
    # history that is not visible (e.g. a superseded record); store it all the same.
    added: bool = False


def _update_digest(update: bytes) -> bytes:
    """128 bits of blake3: no one can make another update that matches an honest one's."""
    return blake3.blake3(update).digest(length=16)


def _new_doc(client_id: int | None) -> Doc:
    return Doc({name: Map() for name in MAP_NAMES}, client_id=client_id)


def _root_names(doc: Doc) -> set[str]:
    """The names of a Doc's top-level types. Doc.keys() wraps every root in a new Python Map
    first, about a tenth of the cost of receiving an update; the names are all the check needs."""
    with doc.transaction() as txn:
        return set(doc._doc.roots(txn._txn))


class ClusterDocument:
    def __init__(
        self, local_node_id: bytes | None = None, *, client_id: int | None = None, openers: Openers = DIRECT
    ) -> None:
        # A fresh random client id per process start: after kill -9 the log may lack our last
        # unsynced writes while peers hold them, and reusing the id would mint different
        # items under ids the peers already have.
        self.local_node_id = local_node_id
        self.openers = openers  # how envelopes are verified and decoded (crdt_state/records.py)
        self._doc = _new_doc(client_id)
        self._client_id = self._doc.client_id
        self._views: dict[str, dict[str, SignedEntry]] = {name: {} for name in MAP_NAMES}
        # Node records whose status is not "left", kept as entries change: the node asks for
        # its cluster size on every accepted update, and counting is O(nodes).
        self._not_left = 0
        self._known: dict[bytes, SignedEntry] = {}  # the nodes view by signer id
        self._local_updates: list[bytes] = []
        self.ignored: list[str] = []  # why entries loaded by from_updates were left out
        self.may_delete: DeletePredicate | None = None  # which remote deletes to accept; None: none
        self.merge_local_updates = (
            False  # drain_local_updates gives one merged update (the daemon's job loop sets it)
        )
        self.rebuilds = 0  # refusals that re-encoded the whole document (each costs O(document))
        self._seen: OrderedDict[bytes, None] = (
            OrderedDict()
        )  # _update_digest of updates applied since the last rebuild
        self._watchers: list[Callable[[str, str], None]] = []
        self._make_shadow(b"")

    # ---- construction and restore -------------------------------------------------------

    @classmethod
    def from_updates(
        cls,
        updates: Iterable[bytes],
        local_node_id: bytes | None = None,
        *,
        client_id: int | None = None,
        openers: Openers = DIRECT,
    ) -> "ClusterDocument":
        """Rebuild from our own store (snapshot + log). Each update was checked when it was
        first accepted; entries are verified again here and the ones that fail are skipped,
        as are updates that do not decode (both listed in `ignored`)."""
        document = cls(local_node_id, client_id=client_id, openers=openers)
        skipped = []
        for number, update in enumerate(updates):
            try:
                document._doc.apply_update(bytes(update))
            except Exception as exc:
                skipped.append(f"stored update #{number} does not decode: {exc}")
        # Re-encoding drops structs still waiting for a skipped update, keeping the real
        # document and the shadow identical; peers send the missing parts again.
        full_state = document._doc.get_update()
        document._doc = _new_doc(document._client_id)
        document._doc.apply_update(full_state)
        document._make_shadow(full_state)
        document._rebuild_views()
        document.ignored = skipped + document.ignored
        return document

    def _make_shadow(self, full_state: bytes) -> None:
        self._shadow = _new_doc(None)
        if full_state:  # before any check: what the real document holds needs none
            self._shadow.apply_update(full_state)
        self._shadow_maps = {name: self._shadow[name] for name in MAP_NAMES}
        self._changes: set[tuple[str, str]] = set()
        # Next clock per writer in the shadow (and the real document, once an update is
        # accepted), kept from what we integrate: pycrdt's get_state costs O(writers), one
        # writer per node start, and the checks of every update received need it.
        self._clocks: dict[int, int] = decode_state_vector(self._shadow.get_state())
        # Which entries an update changes, told from its bytes (crdt_state/item_keys.py);
        # built on first use, again after REINDEX_AFTER accepted updates if it cannot tell.
        self._item_keys = ItemKeys(MAP_NAMES)
        self._accepted_since_index = 0

    def _changed_entries(self, structs: UpdateStructs) -> set[tuple[str, str]] | None:
        if not self._item_keys.ready:
            self._item_keys.build(read_update(self._shadow.get_update()))
            self._accepted_since_index = 0
        entries = self._item_keys.changed(structs, self._clocks)
        if entries is None and self._accepted_since_index >= REINDEX_AFTER:
            self._item_keys.build(read_update(self._shadow.get_update()))  # O(document), rarely
            self._accepted_since_index = 0
            entries = self._item_keys.changed(structs, self._clocks)
        return entries

    def _apply_to_shadow_observed(self, update: bytes) -> None:
        """Apply to the shadow, noting the changed entries from pycrdt's map events: O(writers)
        per event, so only when the update's bytes cannot tell them."""
        # pycrdt's integrated map, not Map.observe: its wrapper turns each event's target,
        # path and transaction into Python objects too (about twice the update's own cost).
        subscriptions = [
            shadow_map.integrated.observe(partial(self._note_changes, name))
            for name, shadow_map in self._shadow_maps.items()
        ]
        try:
            self._shadow.apply_update(update)
        finally:
            for subscription in subscriptions:
                subscription.drop()

    def _note_changes(self, map_name: str, event: Any) -> None:
        self._changes.update((map_name, key) for key in event.keys)

    def _note_seen(self, digest: bytes) -> None:
        self._seen[digest] = None
        if len(self._seen) > SEEN_UPDATES:
            self._seen.popitem(last=False)

    def _rebuild_after_refusal(self) -> None:
        self.rebuilds += 1
        self._seen.clear()
        # Drops anything the refused update left half-applied in the shadow, and any pending
        # (not yet integrable) deletes in both copies, so the two stay identical. Peers send
        # their whole delete set with every diff, so nothing is lost for good.
        full_state = self._doc.get_update()
        self._doc = _new_doc(self._client_id)
        self._doc.apply_update(full_state)
        self._make_shadow(full_state)

    def _rebuild_views(self) -> None:
        before = [(name, key) for name, view in self._views.items() for key in view]
        self._views = {name: {} for name in MAP_NAMES}
        self._not_left = 0
        self._known = {}
        self.ignored = []
        known: dict[bytes, SignedEntry] = {}
        for map_name in MAP_NAMES:  # nodes first: the other maps need the known nodes
            if map_name != "nodes" and not known:
                known = self._known_nodes()
            real_map = self._doc[map_name]
            for key in sorted(real_map.keys()):
                value = real_map.get(key)
                try:
                    if not isinstance(value, (bytes, bytearray)):
                        raise RecordError("value is not bytes")
                    entry = verify_entry(map_name, key, bytes(value), known, openers=self.openers)
                except RecordError as exc:
                    self.ignored.append(f"{map_name}/{key[:80]}: {exc.reason}")
                    continue
                self._set_view(map_name, key, entry)
        for name, key in before + [(name, key) for name, view in self._views.items() for key in view]:
            self._notify(name, key)

    def _set_view(self, map_name: str, key: str, entry: SignedEntry) -> None:
        self._drop_view(map_name, key)
        self._views[map_name][key] = entry
        if map_name == "nodes":
            self._known[entry.signer_id] = entry
            if entry.node is not None and entry.node.status != "left":
                self._not_left += 1

    def _drop_view(self, map_name: str, key: str) -> None:
        held = self._views[map_name].pop(key, None)
        if map_name == "nodes" and held is not None:
            self._known.pop(held.signer_id, None)
            if held.node is not None and held.node.status != "left":
                self._not_left -= 1

    def watch(self, on_change: Callable[[str, str], None]) -> None:
        """Call on_change(map name, key) after each change of a visible entry (written,
        replaced or removed; the new one, if any, is what get() returns then)."""
        self._watchers.append(on_change)

    def _notify(self, map_name: str, key: str) -> None:
        for on_change in self._watchers:
            on_change(map_name, key)

    def _known_nodes(self) -> Mapping[bytes, SignedEntry]:
        """Signer id -> node entry (do not change it): kept as entries change, since every
        local write and every update with job records checks its signers against it."""
        return self._known

    # ---- local writes ---------------------------------------------------------------------

    def put_local(self, map_name: str, key: str, envelope: bytes) -> None:
        """Write one of our own records; raises RecordError (and changes nothing) if no
        reader would accept it."""
        if map_name not in MAP_KINDS:
            raise RecordError(f"unknown map {map_name!r}")
        entry = verify_entry(
            map_name,
            key,
            envelope,
            self._known_nodes(),
            held=self._views[map_name].get(key),
            openers=self.openers,
        )
        if self.local_node_id is not None and entry.signer_id != self.local_node_id:
            raise RecordError("put_local writes only records signed by this node")
        update = self._local_transaction(lambda: self._doc[map_name].__setitem__(key, entry.envelope))
        self._shadow.apply_update(update)
        self._advance_local_clocks(update)
        self._changes.clear()
        self._set_view(map_name, key, entry)
        self._local_updates.append(update)
        self._notify(map_name, key)
        self._note_seen(_update_digest(update))

    def delete_local(self, entries: Iterable[tuple[str, str]]) -> int:
        """Remove these (map name, key) entries of jobs, runs and cancels in one transaction,
        queued like put_local's writes; returns how many were there to remove. Raises
        RecordError (and removes nothing) for a map that is not deletable."""
        wanted = list(dict.fromkeys(entries))
        for entry in wanted:
            if not (
                isinstance(entry, tuple)
                and len(entry) == 2
                and entry[0] in DELETABLE_MAPS
                and isinstance(entry[1], str)
            ):
                raise RecordError(
                    f"delete_local takes (map, key) pairs of {', '.join(DELETABLE_MAPS)}, got {entry!r:.80}"
                )
        present = [(map_name, key) for map_name, key in wanted if key in self._doc[map_name]]
        if not present:
            return 0

        def delete_all() -> None:
            for map_name, key in present:
                del self._doc[map_name][key]

        update = self._local_transaction(delete_all)
        self._shadow.apply_update(update)
        self._advance_local_clocks(update)
        self._changes.clear()
        for map_name, key in present:
            self._drop_view(map_name, key)
            self._notify(map_name, key)
        self._local_updates.append(update)
        self._note_seen(_update_digest(update))
        return len(present)

    def _local_transaction(self, write: Callable[[], None]) -> bytes:
        """Run `write` in one transaction and return that transaction's own update.

        Not get_update(state before): that carries the document's whole delete set, including
        other writers' overwritten versions, and a replica that has not yet received the newer
        version of such a key would see it vanish and refuse our honest update."""
        captured: list[bytes] = []
        # Subscribed per call: _doc is replaced on restore and after a refusal, and a
        # subscription kept on an old Doc would silently capture nothing.
        subscription = self._doc.observe(lambda event: captured.append(event.update))
        try:
            with self._doc.transaction():
                write()
        finally:
            self._doc.unobserve(subscription)
        return b"".join(captured)

    def _advance_local_clocks(self, update: bytes) -> None:
        structs = read_update(update)
        if structs is None:  # not expected for our own writes; pycrdt knows for sure
            self._clocks = decode_state_vector(self._shadow.get_state())
        else:
            self._advance_clocks(structs)
            self._item_keys.learn(structs)

    def drain_local_updates(self) -> list[bytes]:
        """Updates made by put_local/delete_local since the last call, for eager push and the
        store. With `merge_local_updates`, merged into one when there are several (a batch of
        submits, the claims of one job-loop pass), so every receiver checks, stores and passes
        on one update instead of many; still only our own transactions' inserts and deletes."""
        updates, self._local_updates = self._local_updates, []
        if self.merge_local_updates and len(updates) > 1:
            merged = pycrdt.merge_updates(*updates)
            self._note_seen(_update_digest(merged))
            return [merged]
        return updates

    # ---- remote updates -----------------------------------------------------------------

    def apply_remote(self, update: bytes) -> ApplyResult:
        if not isinstance(update, (bytes, bytearray)):
            return ApplyResult(False, f"update must be bytes, got {type(update).__name__}")
        if len(update) > MAX_UPDATE:
            return ApplyResult(False, f"update of {len(update)} bytes is over the {MAX_UPDATE} limit")
        update = bytes(update)
        digest = _update_digest(update)
        if digest in self._seen:
            return ApplyResult(True, None)  # a duplicate: nothing new (see the module doc)
        self._changes.clear()
        structs = read_update(update)
        if structs is None:
            return self._apply_remote_described_by_pycrdt(update, digest)
        if self._lacks_what_it_builds_on(structs):
            # Refused before it touches the shadow, so no rebuild: the common case is one
            # writer's pushes overtaking each other on the way here.
            return ApplyResult(False, _MISSING, missing=True)
        entries = self._changed_entries(structs)
        try:
            if entries is None:
                self._apply_to_shadow_observed(update)
            else:
                self._shadow.apply_update(update)
                self._changes.update(entries)
        except Exception as exc:  # pycrdt raises ValueError for undecodable input
            self._rebuild_after_refusal()
            return ApplyResult(False, f"update does not decode: {exc}")
        # Every writer starts within what we hold and every reference is held or in the
        # update, so pycrdt integrated all of it: nothing is left waiting in the shadow.
        verdict = self._check_shadow()
        if isinstance(verdict, ApplyResult):
            self._rebuild_after_refusal()
            return verdict
        grew = self._advance_clocks(structs)
        self._item_keys.learn(structs)
        self._accepted_since_index += 1
        return self._accept(update, digest, verdict, grew)

    def _apply_remote_described_by_pycrdt(self, update: bytes, digest: bytes) -> ApplyResult:
        """apply_remote for an update read_update does not describe (or that does not decode):
        the same questions asked of pycrdt, each O(writers)."""
        state_before = self._shadow.get_state()
        if clock_gap(update, state_before) is not None:
            return ApplyResult(False, _MISSING, missing=True)
        try:
            self._apply_to_shadow_observed(update)
        except Exception as exc:  # pycrdt raises ValueError for undecodable input
            self._rebuild_after_refusal()
            return ApplyResult(False, f"update does not decode: {exc}")
        state_after = self._shadow.get_state()
        if pycrdt.get_update(update, state_after)[0] != 0:
            # Some structs could not be integrated: they wait for earlier updates we lack.
            self._rebuild_after_refusal()
            return ApplyResult(False, _MISSING, missing=True)
        verdict = self._check_shadow()
        if isinstance(verdict, ApplyResult):
            self._rebuild_after_refusal()
            return verdict
        self._clocks = decode_state_vector(state_after)
        return self._accept(update, digest, verdict, state_after != state_before)

    def _lacks_what_it_builds_on(self, structs: UpdateStructs) -> bool:
        """A writer whose part starts beyond the clock we hold, or an item whose origin or
        parent we neither hold nor get in this update: pycrdt would keep it pending."""
        clocks = self._clocks
        for client, (start, _end) in structs.writers.items():
            if start > clocks.get(client, 0):
                return True
        for (item_client, item_clock), (client, clock) in structs.references:
            if item_clock < clocks.get(item_client, 0) or clock < clocks.get(client, 0):
                continue  # an item we hold is skipped; a reference we hold is met
            span = structs.writers.get(client)
            if span is None or not span[0] <= clock < span[1]:
                return True
        return False

    def _advance_clocks(self, structs: UpdateStructs) -> bool:
        """Move our per-writer clocks past what was integrated; True if any moved."""
        grew = False
        for client, (_start, end) in structs.writers.items():
            if end > self._clocks.get(client, 0):
                self._clocks[client] = end
                grew = True
        return grew

    def _accept(
        self,
        update: bytes,
        digest: bytes,
        verdict: tuple[list[SignedEntry], list[tuple[str, str]], set[str]],
        grew: bool,
    ) -> ApplyResult:
        entries, removed, stale = verdict
        self._doc.apply_update(update)
        for entry in entries:
            self._set_view(entry.map_name, entry.key, entry)
            self._notify(entry.map_name, entry.key)
        for map_name, key in removed:
            self._drop_view(map_name, key)
            self._notify(map_name, key)
        own_key = self.local_node_id.hex() if self.local_node_id is not None else None
        if own_key in stale:
            held = self._views["nodes"][own_key]
            self.put_local("nodes", own_key, held.envelope)
        changed = frozenset((e.map_name, e.key) for e in entries) | frozenset(removed)
        self._note_seen(digest)
        return ApplyResult(True, None, changed, stale=frozenset(stale), added=grew or bool(changed))

    def _check_shadow(self) -> ApplyResult | tuple[list[SignedEntry], list[tuple[str, str]], set[str]]:
        """Verify the entries the update just applied to the shadow changed there."""
        unknown_roots = _root_names(self._shadow) - set(MAP_NAMES)
        if unknown_roots:
            return ApplyResult(False, f"update writes unknown top-level names {sorted(unknown_roots)[:5]}")
        changes = sorted(self._changes, key=lambda change: (MAP_NAMES.index(change[0]), change[1]))
        self._changes.clear()
        # Node records of this update count as known for its other entries, not before.
        known: MutableMapping[bytes, SignedEntry] = ChainMap({}, self._known)
        entries: list[SignedEntry] = []
        removed: list[tuple[str, str]] = []
        stale: set[str] = set()
        for map_name, key in changes:
            where = f"{map_name}/{str(key)[:16]}"
            value = self._shadow_maps[map_name].get(key)
            if value is None:
                if key not in self._views[map_name]:
                    continue  # never visible here: nothing a reader would miss
                refusal = self._refuse_delete(map_name, key)
                if refusal is not None:
                    return ApplyResult(False, f"{where}: {refusal}")
                removed.append((map_name, key))
                continue
            if not isinstance(value, (bytes, bytearray)):
                return ApplyResult(False, f"{where}: value is {type(value).__name__}, not a signed record")
            held = self._views[map_name].get(key)
            if held is not None and held.envelope == value:
                continue  # e.g. a concurrent write that lost: what readers see is unchanged
            try:
                entry = verify_entry(map_name, key, bytes(value), known, held, self.openers)
            except StaleRecord:
                stale.add(key)
                continue
            except RecordError as exc:
                return ApplyResult(False, f"{where}: {exc.reason}")
            if map_name == "nodes":
                known[entry.signer_id] = entry
            entries.append(entry)
        return entries, removed, stale

    def _refuse_delete(self, map_name: str, key: str) -> str | None:
        """Why this visible entry may not be deleted by a peer, or None to allow it."""
        if map_name not in DELETABLE_MAPS:
            return f"deleting {map_name} entries is never accepted"
        if self.may_delete is None:
            return "deleting entries is not accepted (no delete rule set)"
        try:
            allowed = self.may_delete(map_name, key, self._views[map_name][key])
        except Exception as exc:  # a bug in the rule must not leave the shadow half-applied
            return f"the delete rule failed: {type(exc).__name__}: {exc}"
        return None if allowed is True else "deleting this entry is not allowed yet"

    # ---- reads ----------------------------------------------------------------------------

    def nodes_not_left(self) -> int:
        """How many node records do not say "left" (what node_records() would count), O(1)."""
        return self._not_left

    def node_records(self) -> dict[bytes, NodeRecord]:
        return {entry.signer_id: entry.node for entry in self._views["nodes"].values()}

    def get(self, map_name: str, key: str) -> SignedEntry | None:
        return self._views[map_name].get(key)

    def items(self, map_name: str) -> dict[str, SignedEntry]:
        return dict(self._views[map_name])

    def state_vector(self) -> bytes:
        return self._doc.get_state()

    def update_since(self, state_vector: bytes | None) -> bytes:
        """What a peer with this state vector lacks (everything when None)."""
        if state_vector is None:
            return self._doc.get_update()
        if not isinstance(state_vector, (bytes, bytearray)):
            raise DocumentError("state vector must be bytes")
        try:
            return self._doc.get_update(bytes(state_vector))
        except Exception as exc:
            raise DocumentError(f"state vector does not decode: {exc}") from None

    def full_state(self) -> bytes:
        return self._doc.get_update()
