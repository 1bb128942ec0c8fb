"""What a job asks for: the spec a submitter signs and every node decodes.

A spec arrives from a peer, so `from_wire` trusts nothing: every field is checked for type,
range and shape, and a bad spec is refused whole with a message naming the field.
The job id is blake3 over the canonical msgpack encoding (sorted keys, no floats: the
timeout is whole milliseconds), so every node derives the same id from the same spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import blake3
import msgpack

from metrics_agent.wire import WireError, need_int, need_list, need_map, need_str, need_str_map

from .image_refs import DEFAULT_PULL, PULL_POLICIES
from .placement import MAX_KEY_CHARS
from .requirements import RequirementsError, WorkloadRequirements

KINDS = ("build", "run", "wasm")
SPEC_VERSION = 1
MAX_TIMEOUT_MS = 30 * 86400 * 1000
DEFAULT_TIMEOUT_MS = 3600 * 1000
MAX_COMMAND_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_INPUTS = 256
MAX_REPLICAS = 16
MAX_RETRIES = 16
MAX_SHARDS = 64
MAX_RETRY_DELAY_MS = 86400 * 1000

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Input names become file names under /data/inputs: one relative path, no tricks.
_INPUT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}(/[A-Za-z0-9._-]{1,128}){0,7}$")
# Image references: name[:tag], registry/path[:tag|@digest] or an image id.
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
# A build's --tag: name[:tag], kept on the builder (pack_manager/image_refs.py says how it is stored).
_TAG = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,200}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$")


class JobSpecError(ValueError):
    """A job spec that cannot be accepted; the message names the field."""


@dataclass(frozen=True, slots=True)
class JobInput:
    name: str  # path under /data/inputs
    digest: str  # blake3 hex of the blob


@dataclass(frozen=True, slots=True)
class JobSpec:
    kind: str
    submitter: bytes  # 32-byte node id of the submitting daemon
    nonce: bytes  # 16 random bytes so equal specs get distinct ids
    context: str | None = None  # blake3 hex of a tar blob (build context / files for run, wasm)
    containerfile: str = "Containerfile"
    image: str | None = None  # run: local image name or id
    command: tuple[str, ...] = ()
    module: str | None = None  # wasm: blake3 hex of the module blob, or a path inside the context
    inputs: tuple[JobInput, ...] = ()
    requirements: WorkloadRequirements = field(default_factory=WorkloadRequirements)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    replicas: int = 1
    keep_image: bool = False
    # Rank nodes that already hold the job's blobs first (after preferred labels); who holds
    # what comes from the document (see pack_manager.scheduling.order_nodes).
    prefer_local_inputs: bool = False
    # Rank nodes by this key instead of the job id (pack_manager.placement.ranking_id).
    placement_key: str | None = None
    # A run that fails or times out is retried on the next ranked node that has not tried the
    # job, up to `retries` times, the n-th retry retry_delay_ms x 2^(n-1) after the failure.
    retries: int = 0
    retry_delay_ms: int = 0
    # Fail the job when no run has started this long after it was submitted (None: wait forever).
    queue_timeout_ms: int | None = None
    # One shard of a sharded job: shard_index of shard_count, all shards naming the same
    # shard_group (32 bytes), which ranks the nodes for them all (pack_manager.scheduling).
    shard_index: int = 0
    shard_count: int = 0  # 0: not sharded
    shard_group: bytes | None = None
    # The client key (raw Ed25519 public key, hex) that submitted the job through the HTTP API;
    # None for the local socket. Cancels by other clients are refused; quotas count by it.
    client: str | None = None
    # run: when to pull the image from a registry (missing: only when no node holds it).
    pull: str = DEFAULT_PULL
    # build: the name the built image keeps on the builder (besides the archive output).
    tag: str | None = None
    # pack()'s bytes, made once (a spec is not changed once made): a submit packs it to seal
    # the record and again to name the job.
    _packed: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self)

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": SPEC_VERSION,
            "kind": self.kind,
            "submitter": self.submitter,
            "nonce": self.nonce,
            "context": self.context,
            "containerfile": self.containerfile,
            "image": self.image,
            "command": list(self.command),
            "module": self.module,
            "inputs": [[item.name, item.digest] for item in self.inputs],
            "requirements": self.requirements.to_wire(),
            "timeout_ms": self.timeout_ms,
            "env": dict(self.env),
            "network": self.network,
            "replicas": self.replicas,
            "keep_image": self.keep_image,
            # Written only when set, so specs without it keep the bytes (and ids) they had.
            **({"prefer_local_inputs": True} if self.prefer_local_inputs else {}),
            **({"placement_key": self.placement_key} if self.placement_key is not None else {}),
            **({"retries": self.retries, "retry_delay_ms": self.retry_delay_ms} if self.retries else {}),
            **({"queue_timeout_ms": self.queue_timeout_ms} if self.queue_timeout_ms is not None else {}),
            **({"shard": [self.shard_index, self.shard_count, self.shard_group]} if self.shard_count else {}),
            **({"client": self.client} if self.client is not None else {}),
            **({"pull": self.pull} if self.pull != DEFAULT_PULL else {}),
            **({"tag": self.tag} if self.tag is not None else {}),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> "JobSpec":
        try:
            record = need_map(raw, "job spec")
            version = need_int(record, "v", high=2**16)
            if version != SPEC_VERSION:
                raise WireError(f"v: unsupported job spec version {version}")
            inputs = []
            for item in need_list(record, "inputs", limit=MAX_INPUTS):
                if not isinstance(item, (list, tuple)) or len(item) != 2:
                    raise WireError("inputs: each input must be [name, digest]")
                name, digest = item
                if not isinstance(name, str) or not isinstance(digest, str):
                    raise WireError("inputs: name and digest must be text")
                inputs.append(JobInput(name, digest))
            command = need_list(record, "command", limit=MAX_COMMAND_ARGS)
            if not all(isinstance(arg, str) for arg in command):
                raise WireError("command: every argument must be text")
            return cls(
                kind=need_str(record, "kind", limit=16),
                submitter=_need_bytes(record, "submitter"),
                nonce=_need_bytes(record, "nonce"),
                context=need_str(record, "context", limit=64, optional=True),
                containerfile=need_str(record, "containerfile", limit=256),
                image=need_str(record, "image", limit=255, optional=True),
                command=tuple(command),
                module=need_str(record, "module", limit=1024, optional=True),
                inputs=tuple(inputs),
                requirements=WorkloadRequirements.from_wire(record.get("requirements")),
                timeout_ms=need_int(record, "timeout_ms", low=1, high=MAX_TIMEOUT_MS),
                env=need_str_map(record, "env"),
                network=_need_bool(record, "network"),
                replicas=need_int(record, "replicas", low=1, high=MAX_REPLICAS),
                keep_image=_need_bool(record, "keep_image"),
                prefer_local_inputs=_need_bool(record, "prefer_local_inputs")
                if "prefer_local_inputs" in record
                else False,
                placement_key=need_str(record, "placement_key", limit=MAX_KEY_CHARS, optional=True),
                retries=need_int(record, "retries", high=MAX_RETRIES) if "retries" in record else 0,
                retry_delay_ms=need_int(record, "retry_delay_ms", high=MAX_RETRY_DELAY_MS)
                if "retries" in record
                else 0,
                queue_timeout_ms=need_int(record, "queue_timeout_ms", low=1, high=MAX_TIMEOUT_MS)
                if "queue_timeout_ms" in record
                else None,
                **_wire_shard(record),
                client=need_str(record, "client", limit=64) if "client" in record else None,
                pull=need_str(record, "pull", limit=16) if "pull" in record else DEFAULT_PULL,
                tag=need_str(record, "tag", limit=330, optional=True),
            )
        except (WireError, RequirementsError) as exc:
            raise JobSpecError(f"job spec: {exc}") from exc

    def pack(self) -> bytes:
        """Canonical bytes: same spec, same bytes, on every node and Python version."""
        if self._packed is None:
            object.__setattr__(self, "_packed", msgpack.packb(_sorted(self.to_wire()), use_bin_type=True))
        return self._packed  # type: ignore[return-value]

    @classmethod
    def unpack(cls, data: bytes) -> "JobSpec":
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise JobSpecError(f"job spec: not valid msgpack ({exc})") from exc
        return cls.from_wire(raw)

    def job_id(self) -> bytes:
        return blake3.blake3(self.pack()).digest()


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _wire_shard(record: Mapping[str, Any]) -> dict[str, Any]:
    if "shard" not in record:
        return {}
    value = record["shard"]
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise WireError("shard: expected [index, count, group]")
    index, count, group = value
    return {"shard_index": index, "shard_count": count, "shard_group": group}


def _need_bytes(record: Mapping[str, Any], key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise WireError(f"{key}: expected bytes, got {type(value).__name__}")
    return value


def _need_bool(record: Mapping[str, Any], key: str) -> bool:
    value = record.get(key)
    if not isinstance(value, bool):
        raise WireError(f"{key}: expected true or false, got {type(value).__name__}")
    return value


def _clean_text(value: object) -> bool:
    """Text that encodes to UTF-8 (no lone surrogates) and holds no NUL."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def check_relative_path(text: str, what: str) -> None:
    """A path inside an archive or work area: relative, no '..', no empty or odd parts."""
    if not text or len(text) > 1024 or not _clean_text(text) or "\\" in text:
        raise JobSpecError(f"{what}: {text!r} is not a usable relative path")
    if text.startswith("/"):
        raise JobSpecError(f"{what}: {text!r} is absolute; give a path inside the context")
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise JobSpecError(f"{what}: {text!r} must not contain '.', '..' or empty parts")


def _check(spec: JobSpec) -> None:
    if spec.kind not in KINDS:
        raise JobSpecError(f"kind: {spec.kind!r} is not one of {', '.join(KINDS)}")
    if spec.client is not None and not re.fullmatch(r"[0-9a-f]{64}", spec.client):
        raise JobSpecError("client: must be a client public key (64 hex)")
    if not isinstance(spec.submitter, bytes) or len(spec.submitter) != 32:
        raise JobSpecError("submitter: must be a 32-byte node id")
    if not isinstance(spec.nonce, bytes) or len(spec.nonce) != 16:
        raise JobSpecError("nonce: must be 16 bytes")
    if not isinstance(spec.prefer_local_inputs, bool):
        raise JobSpecError("prefer_local_inputs: expected true or false")
    if spec.placement_key is not None and (
        not _clean_text(spec.placement_key) or not 1 <= len(spec.placement_key) <= MAX_KEY_CHARS
    ):
        raise JobSpecError(f"placement_key: 1 to {MAX_KEY_CHARS} characters of text without NUL")
    if spec.context is not None and not is_digest(spec.context):
        raise JobSpecError(f"context: {spec.context!r} is not a blake3 hex digest")
    check_relative_path(spec.containerfile, "containerfile")
    if not isinstance(spec.requirements, WorkloadRequirements):
        raise JobSpecError("requirements: expected WorkloadRequirements")
    if (
        not isinstance(spec.timeout_ms, int)
        or isinstance(spec.timeout_ms, bool)
        or not 1 <= spec.timeout_ms <= MAX_TIMEOUT_MS
    ):
        raise JobSpecError(f"timeout: {spec.timeout_ms!r} ms is outside 1 ms .. 30 days")
    if (
        not isinstance(spec.replicas, int)
        or isinstance(spec.replicas, bool)
        or not 1 <= spec.replicas <= MAX_REPLICAS
    ):
        raise JobSpecError(f"replicas: {spec.replicas!r} is outside 1..{MAX_REPLICAS}")
    _check_int("retries", spec.retries, 0, MAX_RETRIES)
    _check_int("retry_delay", spec.retry_delay_ms, 0, MAX_RETRY_DELAY_MS)
    if spec.retry_delay_ms and not spec.retries:
        raise JobSpecError("retry_delay: applies only with retries (--retries N)")
    if spec.queue_timeout_ms is not None:
        _check_int("queue_timeout", spec.queue_timeout_ms, 1, MAX_TIMEOUT_MS)
    if spec.shard_count or spec.shard_index or spec.shard_group is not None:
        _check_int("shards", spec.shard_count, 1, MAX_SHARDS)
        _check_int("shard index", spec.shard_index, 0, spec.shard_count - 1)
        if not isinstance(spec.shard_group, bytes) or len(spec.shard_group) != 32:
            raise JobSpecError("shard group: must be 32 bytes")
        if spec.replicas != 1:
            raise JobSpecError("shards: a sharded job runs each shard once (no --replicas)")
    if not isinstance(spec.network, bool) or not isinstance(spec.keep_image, bool):
        raise JobSpecError("network and keep_image must be true or false")
    if len(spec.command) > MAX_COMMAND_ARGS or any(
        not _clean_text(arg) or len(arg) > MAX_ARG_CHARS for arg in spec.command
    ):
        raise JobSpecError(
            f"command: at most {MAX_COMMAND_ARGS} arguments of UTF-8 text without NUL, each up to "
            f"{MAX_ARG_CHARS} characters"
        )
    for key, value in spec.env.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise JobSpecError(
                f"env: {key!r} is not a variable name (letters, digits, '_', not starting with a digit)"
            )
        if not _clean_text(value) or len(value) > MAX_ARG_CHARS:
            raise JobSpecError(
                f"env: value of {key} must be text without NUL, up to {MAX_ARG_CHARS} characters"
            )
    seen: set[str] = set()
    for item in spec.inputs:
        if not _INPUT_NAME.match(item.name) or any(part in (".", "..") for part in item.name.split("/")):
            raise JobSpecError(f"inputs: {item.name!r} is not a plain relative file name")
        if not is_digest(item.digest):
            raise JobSpecError(f"inputs: digest of {item.name!r} is not a blake3 hex digest")
        if item.name in seen:
            raise JobSpecError(f"inputs: {item.name!r} given twice")
        seen.add(item.name)
    _check_kind(spec)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise JobSpecError(f"{name}: {value!r} is outside {low}..{high}")


def _check_kind(spec: JobSpec) -> None:
    executor = spec.requirements.executor
    if spec.kind == "build":
        if spec.context is None:
            raise JobSpecError("build: a context (tar blob digest) is required")
        if spec.image is not None or spec.module is not None:
            raise JobSpecError("build: image and module do not apply; the context's Containerfile says FROM")
    elif spec.kind == "run":
        if not spec.image or not _IMAGE.match(spec.image):
            raise JobSpecError(f"run: image {spec.image!r} must be a local image name (lowercase) or id")
        if spec.module is not None:
            raise JobSpecError("run: module applies to wasm jobs only")
    else:
        if not spec.module:
            raise JobSpecError("wasm: a module (blob digest or path inside the context) is required")
        if not is_digest(spec.module):
            check_relative_path(spec.module, "module")
            if spec.context is None:
                raise JobSpecError("wasm: the module is a path inside the context, but no context was given")
        if spec.image is not None or spec.network:
            raise JobSpecError("wasm: image and network do not apply to the WASM sandbox")
    wanted = "wasm" if spec.kind == "wasm" else "podman"
    if executor != wanted:
        raise JobSpecError(f"requirements: a {spec.kind} job needs the {wanted!r} executor, not {executor!r}")
    if spec.keep_image and spec.kind != "build":
        raise JobSpecError("keep_image: applies to build jobs only")
    if spec.pull not in PULL_POLICIES:
        raise JobSpecError(f"pull: {spec.pull!r} is not one of {', '.join(PULL_POLICIES)}")
    if spec.pull != DEFAULT_PULL and spec.kind != "run":
        raise JobSpecError("pull: applies to run jobs only")
    if spec.tag is not None:
        if spec.kind != "build":
            raise JobSpecError("tag: applies to build jobs only")
        if not isinstance(spec.tag, str) or not _TAG.match(spec.tag):
            raise JobSpecError(f"tag: {spec.tag!r} is not NAME[:TAG] (lowercase name)")
