"""Images in a node's Podman store: list, export, load, pull, tag, remove (blocking podman-py).

Callers run these in a worker thread. Every failure is an ImageError whose message is the one
line a user reads in the job's reason. A load that does not yield the image it was meant to
(a holder that lies, a corrupt archive) puts the store back as it was: images it added are
removed and names it moved are given back.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from podman import PodmanClient
from podman.errors import APIError, ImageNotFound, NotFound, PodmanError
from requests.exceptions import ReadTimeout, RequestException

from metrics_agent.images import HeldImage, short_id

from .image_error import ImageError
from .podman_options import JOB_TAG_PREFIX

SAVE_CHUNK = 1024 * 1024
CLIENT_ERRORS = (PodmanError, RequestException, OSError)


def client(url: str, timeout: float = 60) -> PodmanClient:
    return PodmanClient(base_url=url, timeout=timeout)


def _names(image: Any) -> tuple[str, ...]:
    return tuple(name for name in (image.attrs.get("Names") or image.tags or []) if isinstance(name, str))


def list_held(podman: PodmanClient) -> list[HeldImage]:
    """Named images, most recently created first (the order they are worth publishing in);
    the temporary names builds use are left out."""
    found = []
    for image in podman.images.list():
        names = tuple(n for n in _names(image) if not n.startswith(JOB_TAG_PREFIX))
        if not names:
            continue
        created = image.attrs.get("Created") or 0
        found.append((created if isinstance(created, int) else 0, HeldImage(image.id, _size(image), names)))
    found.sort(key=lambda item: -item[0])
    return [image for _, image in found]


def _size(image: Any) -> int:
    size = image.attrs.get("Size") or image.attrs.get("VirtualSize") or 0
    return size if isinstance(size, int) and size >= 0 else 0


def ids_and_names(podman: PodmanClient) -> dict[str, tuple[str, ...]]:
    """Full image id -> its names, for every image in the store."""
    return {image.id: _names(image) for image in podman.images.list()}


def local_id(podman: PodmanClient, reference: str) -> str | None:
    """The full id of the local image a reference names, or None."""
    try:
        return podman.images.get(reference).id
    except (ImageNotFound, NotFound):
        return None
    except APIError as exc:
        if exc.status_code == 404 or "not known" in str(exc) or "no such image" in str(exc).lower():
            return None
        raise


def image_size(podman: PodmanClient, image_id: str) -> int:
    return _size(podman.images.get(image_id))


def save_chunks(podman: PodmanClient, image_id: str) -> Iterator[bytes]:
    """The image as a docker-archive (what `podman save` writes), streamed, without names: the
    loader names it, so loading can never move a name the loading store gives another image."""
    try:
        image = podman.images.get(image_id)
    except (ImageNotFound, NotFound):
        raise ImageError(f"image {image_id[:12]} is not held here") from None
    return image.save(chunk_size=SAVE_CHUNK, named=False)


def load_archive(
    podman: PodmanClient, archive: Path, expected_id: str, names: Iterable[str] = ()
) -> tuple[str, bool]:
    """Load an archive that must hold the image whose id starts with `expected_id`, and give
    it `names`.

    Returns (full id, whether the store lacked it before). When the archive does not load or
    holds another image, the store is put back as it was and ImageError says why."""
    before = ids_and_names(podman)
    with open(archive, "rb") as body:
        response = podman.api.post("/images/load", data=body, headers={"Content-type": "application/x-tar"})
    after = ids_and_names(podman)
    if response.status_code >= 400:
        _restore(podman, before, after)
        raise ImageError(f"the archive does not load: {_message(response)[:300]}")
    wanted = next((image_id for image_id in after if image_id.startswith(expected_id)), None)
    if wanted is None:
        loaded = sorted(set(after) - set(before)) or [
            image_id for image_id, names in after.items() if names != before.get(image_id)
        ]
        _restore(podman, before, after)
        held = ", ".join(short_id(i)[:12] for i in loaded) or "nothing new"
        raise ImageError(f"the archive does not hold image {expected_id[:12]} (it holds {held})")
    _restore(podman, before, after, keep=wanted)
    for name in names:
        tag(podman, wanted, name)
    return wanted, wanted not in before


def _restore(
    podman: PodmanClient,
    before: dict[str, tuple[str, ...]],
    after: dict[str, tuple[str, ...]],
    keep: str | None = None,
) -> None:
    """Remove images a load added (but `keep`) and give moved names back to their images."""
    for image_id in set(after) - set(before) - {keep}:
        remove_quietly(podman, image_id)
    for image_id, names in before.items():
        for name in names:
            if name not in after.get(image_id, ()) and image_id in ids_and_names(podman):
                try:
                    podman.images.get(image_id).tag(*_repository_and_tag(name))
                except CLIENT_ERRORS:
                    pass  # the image itself went away meanwhile: nothing to give the name back to


def _repository_and_tag(name: str) -> tuple[str, str]:
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


def tag(podman: PodmanClient, image_id: str, name: str) -> None:
    repository, tag_name = _repository_and_tag(name)
    podman.images.get(image_id).tag(repository, tag_name)


def remove_quietly(podman: PodmanClient, image_id: str) -> bool:
    """Remove an image (every name); False when Podman refuses (a container still uses it)."""
    try:
        podman.images.remove(image_id)
        return True
    except (ImageNotFound, NotFound):
        return True
    except CLIENT_ERRORS:
        return False


def untag_quietly(podman: PodmanClient, image_id: str, name: str) -> None:
    repository, tag_name = _repository_and_tag(name)
    try:
        podman.api.post(f"/images/{image_id}/untag", params={"repo": repository, "tag": tag_name})
    except CLIENT_ERRORS:
        pass


def registry_auth(auth_file: Path | None, name: str) -> dict[str, str] | None:
    """Credentials for the registry of `name` from a Podman auth.json ({"auths": {registry:
    {"auth": base64("user:password")}}}); None when the file names none for it."""
    if auth_file is None:
        return None
    try:
        auths = json.loads(auth_file.read_text(encoding="utf-8")).get("auths") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise ImageError(f"registry_auth_file {auth_file}: unreadable ({exc})") from None
    registry = name.split("/", 1)[0]
    for key in (registry, f"https://{registry}", f"http://{registry}"):
        entry = auths.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise ImageError(
                    f"registry_auth_file {auth_file}: the entry for {registry} is not base64"
                ) from None
            return {"username": user, "password": password}
    return None


def pull(
    podman: PodmanClient, name: str, auth: dict[str, str] | None, timeout: float, *, tls_verify: bool = True
) -> str:
    """Pull `name` from its registry; the pulled image's full id, or ImageError with a reason
    (registry unreachable, not in the registry, credentials refused, ...)."""
    headers = {}
    if auth:
        from podman import api as podman_api  # noqa: PLC0415

        headers["X-Registry-Auth"] = podman_api.encode_auth_header(auth)
    try:
        response = podman.api.post(
            "/images/pull",
            params={"reference": name, "policy": "always", "quiet": True, "tlsVerify": tls_verify},
            headers=headers,
            timeout=timeout,
        )
    except APIError as exc:  # podman-py wraps the transport's errors (a read timeout too)
        if isinstance(exc.__cause__, (ReadTimeout, TimeoutError)):
            raise ImageError(f"registry timed out after {timeout:g} s") from None
        raise
    except (ReadTimeout, TimeoutError):
        raise ImageError(f"registry timed out after {timeout:g} s") from None
    text = response.text
    error = _stream_error(text) if response.status_code < 400 else _message(response)
    if error:
        raise ImageError(classify_pull_error(error))
    found = local_id(podman, name)
    if found is None:
        raise ImageError("the registry answered but no image arrived")
    return found


def _stream_error(text: str) -> str | None:
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("error"):
            return str(item["error"])
    return None


_CAUSES = ("dial tcp", "unauthorized", "denied", "manifest unknown", "name unknown", "not found")


def classify_pull_error(message: str) -> str:
    """Podman's pull error as one reason: what kind of failure first, then the innermost cause
    (Podman nests them: "initializing source ...: pinging container registry ...: Get ...:
    dial tcp ...: connect: connection refused")."""
    lowered = message.lower()
    text = message.strip().splitlines()[-1] if message.strip() else "no detail"
    starts = [at for at in (text.lower().find(cause) for cause in _CAUSES) if at >= 0]
    detail = (text[min(starts) :] if starts else text)[:300]
    if any(
        s in lowered
        for s in ("connection refused", "no such host", "i/o timeout", "network is unreachable", "dial tcp")
    ):
        return f"registry unreachable: {detail}"
    if any(s in lowered for s in ("unauthorized", "authentication required", "denied")):
        return f"the registry refused access: {detail}"
    if any(s in lowered for s in ("manifest unknown", "not found", "name unknown")):
        return f"not in the registry: {detail}"
    return f"pull failed: {detail}"


def _message(response: Any) -> str:
    try:
        body = response.json()
        return str(body.get("cause") or body.get("message") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        return response.text[:500]


def explain(exc: BaseException) -> str:
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, APIError):
        return f"podman: {getattr(exc, 'explanation', None) or exc}"
    return f"podman: {type(exc).__name__}: {exc}"
