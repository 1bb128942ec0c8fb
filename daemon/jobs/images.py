"""A node's images: published in its record, moved between nodes, pulled, cached (trio driver).

Publishing: the named images of this node's Podman go into its record's capabilities
(metrics_agent/images.py bounds them), refreshed every REFRESH_S and after every change formd
makes, so `form images` and placement see who holds what.

Getting a run job's image (`ensure`, before the job starts): a local image is used as it is
(unless --pull always). Otherwise each live node that publishes it is asked in turn to export
it; the holder streams `podman save` into its blob store (content-addressed by blake3) and
answers with the digest; the runner fetches that blob over the sealed transport (verified
as it arrives, daemon/jobs/blobfetch.py) and loads it, and the load must yield the image id
the holder published (podman_images.load_archive puts the store back when it does not).
Then the registry, unless --pull never or the name is a localhost one no registry has.
When nothing works the reason names every attempt; the loop declines the job for good.

    request  0xc1 + msgpack {"op": "image", "id": published id}
    reply    0xc1 + msgpack {"digest": hex, "size": int} | {"pending": true}  or a str reason

An export can take longer than one request may, so the first request starts it and the
runner asks again until the digest is there. Exports are kept (images.json: published id ->
digest) and shielded from blob collection for a retention period from their last request.

podman-py (and requests under it) is some 9 MiB of formd's memory and 0.1 s of its start, and
a node without Podman never needs it: the functions that talk to Podman get
pack_manager.executors.podman_images from _podman_images() on first use, and run only once
this node has a Podman URL.

Cache: images formd added (loaded, pulled, built with --tag) are listed in images.json with
their last use and size and held to image_cache_bytes, least recently used removed first
(pack_manager/image_cache.py); images the operator put in the store are never listed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Awaitable, Callable

import msgpack
import trio

from daemon.cluster.wire import SIDE_REQUEST
from daemon.jobs.blobfetch import FetchError
from daemon.jobs.blobstore import BlobError, BlobStore, check_digest
from daemon.transport.interface import TransportError
from metrics_agent.images import ID_CHARS, HeldImage, images_from_wire, publishable, short_id
from pack_manager import image_cache
from pack_manager.executors.image_error import ImageError
from pack_manager.image_refs import find_image, full_names, registry_name

REFRESH_S = 10.0
EXPORT_POLL_S = 0.2
STATE_NAME = "images.json"
_PENDING = "pending"


class NodeImages:
    def __init__(
        self,
        node: Any,  # daemon.cluster.node.Node
        blobs: BlobStore,
        state_dir: Path,
        podman_url: Callable[[], str | None],
        fetch: Callable[[str, list[str]], Awaitable[None]],
        shielded: dict[str, float],
        *,
        auth_file: Path | None = None,
        pull_timeout_s: float = 300.0,
        insecure_registries: tuple[str, ...] = (),
        cache_bytes: int = 10 * 1024**3,
        export_wait_s: float = 600.0,
    ) -> None:
        self.node = node
        self.blobs = blobs
        self.path = state_dir / STATE_NAME
        self.podman_url = podman_url
        self._fetch = fetch
        self._shielded = shielded  # digest -> trio time: blob collection leaves these alone a while
        self.auth_file = auth_file
        self.pull_timeout_s = pull_timeout_s
        self.insecure_registries = frozenset(insecure_registries)
        self.cache_bytes = cache_bytes
        self.export_wait_s = export_wait_s
        self.cached: dict[str, image_cache.CachedImage] = {}
        self.exports: dict[str, str] = {}  # published id -> digest of its archive blob
        self._exporting: dict[str, str] = {}  # published id -> _PENDING or the failure reason
        self._using: dict[str, set[str]] = {}  # job hex -> full ids of the images its run or build uses
        self._nursery: trio.Nursery | None = None
        self._acquiring = trio.Lock()
        self._load_state()

    # ---- state file -------------------------------------------------------------------------

    def _load_state(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.node.log.warning(
                "image state unreadable; starting empty", path=str(self.path), reason=str(exc)
            )
            return
        for image_id, entry in (raw.get("cached") or {}).items():
            if isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) for v in entry):
                self.cached[image_id] = image_cache.CachedImage(entry[0], entry[1])
        for published, digest in (raw.get("exports") or {}).items():
            if isinstance(published, str) and isinstance(digest, str) and len(digest) == 64:
                self.exports[published] = digest

    def _save_state(self) -> None:
        body = {
            "cached": {i: [c.last_used_ms, c.size] for i, c in self.cached.items()},
            "exports": self.exports,
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(body, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self.path)

    # ---- publishing ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:  # catches what the operator adds or removes; formd's own changes refresh at once
                await self.refresh()
                await trio.sleep(REFRESH_S)

    async def refresh(self) -> None:
        """Publish what the store holds now (a record write only when it changed)."""
        url = self.podman_url()
        held: list[HeldImage] = []
        if url is not None:
            podman_images = _podman_images()
            try:
                held = await trio.to_thread.run_sync(_list_held, url)
                present = {image.id for image in held}
                if any(image_id not in present for image_id in self.cached):
                    ids = await trio.to_thread.run_sync(_all_ids, url)
                    gone = [image_id for image_id in self.cached if image_id not in ids]
                    for image_id in gone:  # removed by someone else: no longer ours to count
                        del self.cached[image_id]
                    if gone:
                        self._save_state()
            except podman_images.CLIENT_ERRORS as exc:  # Podman gone for a moment: publish nothing new
                self.node.log.debug("image list failed", reason=podman_images.explain(exc))
                return
        published = publishable(held)
        if published != self.node.capabilities.images:
            self.node.capabilities = self.node.capabilities.with_images(published)
            self.node.publish()

    # ---- a run job's image --------------------------------------------------------------------

    def holders(self, reference: str) -> list[tuple[bytes, str, HeldImage]]:
        """Live peers that publish the image: (node id, address, what they publish)."""
        found = []
        for node_id, record in self.node.document.node_records().items():
            if node_id == self.node.identity.node_id or self.node.peer_status(node_id) != "alive":
                continue
            raw = record.capabilities.get("images") if isinstance(record.capabilities, dict) else None
            try:
                image = find_image(reference, images_from_wire(raw))
            except ValueError:
                continue
            if image is not None:
                found.append((node_id, record.address, image))
        return found

    async def ensure(self, job_hex: str, references: list[str], pull: str) -> str | None:
        """Make the images local (a run's image, the images a build is FROM); None when they
        are, else the reason the first that cannot be cannot."""
        url = self.podman_url()
        if url is None:
            return None  # the executor says what is missing
        for reference in references:
            if reason := await self._ensure_one(url, job_hex, reference, pull):
                return reason
        return None

    async def _ensure_one(self, url: str, job_hex: str, reference: str, pull: str) -> str | None:
        podman_images = _podman_images()
        shown = registry_name(reference) or reference
        try:
            image_id = await trio.to_thread.run_sync(_local_id, url, reference)
            if pull == "always" or image_id is None:
                # One load, pull or eviction at a time: a load that fails puts the store back
                # as it found it, which must not undo another one's image, and an image just
                # brought in is marked in use before anything may evict it.
                async with self._acquiring:
                    reason = await self._acquire(url, reference, pull)
                    if reason is not None:
                        return f"image {shown}: {reason}"
                    image_id = await trio.to_thread.run_sync(_local_id, url, reference)
                    if image_id is None:
                        return f"image {shown}: gone from the store before the job could start"
                    self._use(job_hex, image_id)
            else:
                self._use(job_hex, image_id)
            return None
        except (ImageError, *podman_images.CLIENT_ERRORS) as exc:
            return f"image {shown}: {podman_images.explain(exc)}"

    async def _acquire(self, url: str, reference: str, pull: str) -> str | None:
        pull_name = registry_name(reference)
        local = await trio.to_thread.run_sync(_local_id, url, reference)
        if pull == "always" and pull_name is not None:
            try:
                await self._pull(url, pull_name, local)
                return None
            except ImageError as exc:
                return str(exc)
        if local is not None:
            return None  # another job's fetch brought it meanwhile
        reasons = []
        for node_id, address, held in self.holders(reference):
            try:
                await self._transfer(
                    url, address, held, [n for n in held.names if n in full_names(reference)]
                )
                self.node.log.info("image fetched", image=reference, holder=node_id.hex()[:12])
                return None
            except (ImageError, FetchError, BlobError, TransportError) as exc:
                reasons.append(f"from node {node_id.hex()[:12]}: {exc}")
                self.node.log.warning(
                    "image not fetched", image=reference, holder=node_id.hex()[:12], reason=str(exc)
                )
        if pull == "never":
            reasons.append("not pulled (--pull never)")
        elif pull_name is None:
            reasons.append("no registry has it (a localhost image comes from a build or a load)")
        else:
            try:
                await self._pull(url, pull_name, None)
                return None
            except ImageError as exc:
                reasons.append(str(exc))
        if len(reasons) == 1 and (pull_name is None or pull == "never"):  # no holder was tried
            reasons.insert(0, "no node holds it")
        return "; ".join(reasons)

    def _use(self, job_hex: str, image_id: str) -> None:
        self._using.setdefault(job_hex, set()).add(image_id)
        if image_id in self.cached:
            self.cached[image_id] = image_cache.CachedImage(
                int(self.node.wall_clock() * 1000), self.cached[image_id].size
            )
            self._save_state()

    def release(self, job_hex: str) -> None:
        self._using.pop(job_hex, None)

    async def _pull(self, url: str, name: str, had: str | None) -> None:
        podman_images = _podman_images()
        auth = podman_images.registry_auth(self.auth_file, name)
        verify = name.split("/", 1)[0] not in self.insecure_registries
        image_id = await trio.to_thread.run_sync(_pull, url, name, auth, self.pull_timeout_s, verify)
        if image_id != had:
            await self._adopt(url, image_id)

    async def _transfer(self, url: str, address: str, held: HeldImage, names: list[str]) -> None:
        digest = await self._request_export(address, held.id)
        await self._fetch(digest, [address])
        try:
            image_id, added = await trio.to_thread.run_sync(
                _load, url, self.blobs.path(digest), held.id, names
            )
        finally:
            await trio.to_thread.run_sync(self.blobs.delete, digest)  # the image is the copy we keep
        if added:
            await self._adopt(url, image_id)

    async def _request_export(self, address: str, published: str) -> str:
        request = SIDE_REQUEST + msgpack.packb({"op": "image", "id": published}, use_bin_type=True)
        with trio.move_on_after(self.export_wait_s):
            while True:
                reply = await self.node.transport.request(
                    address, request, self.node.settings.request_timeout
                )
                if reply[:1] != SIDE_REQUEST:
                    raise ImageError(f"the holder refused: {reply.decode(errors='replace')[:300]}")
                try:
                    value = msgpack.unpackb(reply[1:], raw=False)
                except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                    raise ImageError("the holder's reply is not msgpack") from None
                if isinstance(value, dict) and isinstance(value.get("digest"), str):
                    try:
                        return check_digest(value["digest"])
                    except (BlobError, ValueError):
                        raise ImageError("the holder's reply names no blob digest") from None
                if not (isinstance(value, dict) and value.get("pending") is True):
                    raise ImageError("the holder's reply is neither a digest nor pending")
                await trio.sleep(EXPORT_POLL_S)
        raise ImageError(f"the holder did not export it within {self.export_wait_s:g} s")

    # ---- serving exports ----------------------------------------------------------------------

    def serve_export(self, request: dict) -> bytes | str:
        published = request.get("id")
        if not isinstance(published, str) or len(published) != ID_CHARS:
            raise ValueError("image request: id must be a published image id")
        digest = self.exports.get(published)
        if digest is not None and self.blobs.has(digest):
            self._shielded[digest] = trio.current_time()
            reply = {"digest": digest, "size": self.blobs.size(digest)}
            return SIDE_REQUEST + msgpack.packb(reply, use_bin_type=True)
        if digest is not None:  # collected since: export again
            del self.exports[published]
        state = self._exporting.get(published)
        if state is None:
            url = self.podman_url()
            if url is None or self._nursery is None:
                return "this node offers no Podman"
            self._exporting[published] = _PENDING
            self._nursery.start_soon(self._export, url, published)
        elif state != _PENDING:
            del self._exporting[published]  # told once; the next request tries again
            return state
        return SIDE_REQUEST + msgpack.packb({"pending": True}, use_bin_type=True)

    async def _export(self, url: str, published: str) -> None:
        podman_images = _podman_images()
        try:
            digest = await trio.to_thread.run_sync(_save, url, published, self.blobs)
        except Exception as exc:
            self._exporting[published] = (
                f"export of image {published[:12]} failed: {podman_images.explain(exc)}"
            )
            return
        self._shielded[digest] = trio.current_time()
        self.exports[published] = digest
        self._save_state()
        self._exporting.pop(published, None)
        self.node.log.info("image exported", image=published[:12], digest=digest[:12])

    # ---- the cache ------------------------------------------------------------------------------

    async def adopt(self, image_id: str) -> None:
        """An image formd added outside a job's acquisition (a build kept under --tag)."""
        url = self.podman_url()
        if url is None:
            return
        podman_images = _podman_images()
        try:
            async with self._acquiring:
                await self._adopt(url, image_id)
        except podman_images.CLIENT_ERRORS as exc:  # the build stands; only the cache count is off
            self.node.log.warning(
                "built image not counted", image=image_id[:12], reason=podman_images.explain(exc)
            )

    async def _adopt(self, url: str, image_id: str) -> None:
        """Count an image formd added (loaded, pulled, built with --tag) in the cache, evict
        what no longer fits, publish. The caller holds _acquiring."""
        size = await trio.to_thread.run_sync(_size, url, image_id)
        self.cached[image_id] = image_cache.CachedImage(int(self.node.wall_clock() * 1000), size)
        await self.evict(url, keep=image_id)
        self._save_state()
        await self.refresh()

    async def evict(self, url: str, keep: str | None = None) -> None:
        in_use = set().union(*self._using.values()) | ({keep} if keep else set())
        for image_id in image_cache.evictions(self.cached, self.cache_bytes, in_use):
            if await trio.to_thread.run_sync(_remove, url, image_id):
                del self.cached[image_id]
                self.node.log.info("image evicted from the cache", image=image_id[:12])


# ---- blocking helpers (worker threads): one client per call ------------------------------------


def _podman_images() -> ModuleType:
    """pack_manager.executors.podman_images, imported on first use (see the module's docstring)."""
    from pack_manager.executors import podman_images  # noqa: PLC0415

    return podman_images


def _list_held(url: str) -> list[HeldImage]:
    podman_images = _podman_images()
    with podman_images.client(url) as podman:
        return podman_images.list_held(podman)


def _all_ids(url: str) -> set[str]:
    podman_images = _podman_images()
    with podman_images.client(url) as podman:
        return set(podman_images.ids_and_names(podman))


def _local_id(url: str, reference: str) -> str | None:
    podman_images = _podman_images()
    with podman_images.client(url) as podman:
        return podman_images.local_id(podman, reference)


def _size(url: str, image_id: str) -> int:
    podman_images = _podman_images()
    with podman_images.client(url) as podman:
        return podman_images.image_size(podman, image_id)


def _remove(url: str, image_id: str) -> bool:
    podman_images = _podman_images()
    with podman_images.client(url) as podman:
        return podman_images.remove_quietly(podman, image_id)


def _load(url: str, archive: Path, published: str, names: list[str]) -> tuple[str, bool]:
    podman_images = _podman_images()
    with podman_images.client(url, timeout=600) as podman:
        return podman_images.load_archive(podman, archive, published, names)


def _pull(url: str, name: str, auth: dict[str, str] | None, timeout: float, verify: bool) -> str:
    podman_images = _podman_images()
    with podman_images.client(url, timeout=timeout) as podman:
        return podman_images.pull(podman, name, auth, timeout, tls_verify=verify)


def _save(url: str, published: str, blobs: BlobStore) -> str:
    podman_images = _podman_images()
    with podman_images.client(url, timeout=600) as podman:
        image_id = podman_images.local_id(podman, published)
        if image_id is None or short_id(image_id) != published:
            raise ImageError(f"image {published[:12]} is not held here")
        return blobs.put_chunks(podman_images.save_chunks(podman, image_id))


def cluster_images(node: Any) -> list[dict[str, Any]]:
    """Every image the node records publish, with its holders (what `form images --json` prints)."""
    by_id: dict[str, dict[str, Any]] = {}
    for node_id, record in node.document.node_records().items():
        raw = record.capabilities.get("images") if isinstance(record.capabilities, dict) else None
        try:
            images = images_from_wire(raw)
        except ValueError:
            continue
        for image in images:
            entry = by_id.setdefault(
                image.id, {"id": image.id, "names": [], "size": image.size, "holders": []}
            )
            entry["names"] = sorted(set(entry["names"]) | set(image.names))
            entry["holders"].append(
                {"id": node_id.hex(), "short_id": node_id.hex()[:12], "status": node.peer_status(node_id)}
            )
    for entry in by_id.values():
        entry["holders"].sort(key=lambda h: h["id"])
    return sorted(by_id.values(), key=lambda e: (e["names"][:1], e["id"]))
