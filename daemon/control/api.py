"""The control socket's methods for a running formd (the dispatch table).

Later features add entries to `methods()`; each takes the request's params object and
returns something JSON can carry, or raises ControlError with a one-line reason.

    nodes                              -> [node object, ...]        (see daemon/control/views.py)
    status                             -> this node's object         (see daemon/control/views.py)
    cluster-key.list                   -> [{"key_id": hex16, "primary": bool}, ...]
    cluster-key.add    {"key": b64}    -> {"key_id": hex16}
    cluster-key.use    {"key_id": hex} -> {"key_id": hex16}
    cluster-key.remove {"key_id": hex} -> {"key_id": hex16}
    label.set    {"labels": {k: v}}    -> {"labels": {...all labels now}}
    label.remove {"keys": [k, ...]}    -> {"labels": {...}}
    capability.set    {"name", "max"}  -> {"capabilities": {name: max_concurrency, ...all now}}
    capability.remove {"name"}         -> {"capabilities": {...}}
    images                             -> [{"id", "names", "size", "holders": [{"id", "short_id",
                                           "status"}]}, ...]  (what the node records publish)

Job and blob methods: see daemon/control/jobs_api.py.

Key, label and capability changes are saved (cluster.key, formd.toml) before the reply, so they survive
a restart.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from daemon import config as config_file
from daemon.cluster.node import Node
from daemon.config import FormdConfig
from daemon.control.jobs_api import JobsApi
from daemon.control.server import ControlError, Handler, param
from daemon.control.views import describe_nodes, describe_self
from daemon.jobs.images import cluster_images
from daemon.jobs.loop import JobLoop
from daemon.transport.keyring import Keyring, KeyringError, decode_key, parse_key_id
from metrics_agent.named_capabilities import MAX_NAMED, CapabilityNameError, check_name, check_slots
from pack_manager.requirements import RequirementsError, parse_labels


class DaemonApi:
    def __init__(
        self,
        node: Node,
        keyring: Keyring,
        keyring_path: Path,
        state_dir: Path,
        config: FormdConfig,
        jobs: "JobLoop | None" = None,
    ) -> None:
        self.node = node
        self.jobs_api = JobsApi(jobs) if jobs is not None else None
        self.keyring = keyring
        self.keyring_path = keyring_path
        self.state_dir = state_dir
        self.config = config

    def methods(self) -> dict[str, Handler]:
        return {
            "nodes": self.nodes,
            "status": self.status,
            "cluster-key.list": self.key_list,
            "cluster-key.add": self.key_add,
            "cluster-key.use": self.key_use,
            "cluster-key.remove": self.key_remove,
            "label.set": self.label_set,
            "label.remove": self.label_remove,
            "capability.set": self.capability_set,
            "capability.remove": self.capability_remove,
            "images": self.images,
            **(self.jobs_api.methods() if self.jobs_api is not None else {}),
        }

    async def nodes(self, params: dict[str, Any]) -> Any:
        return describe_nodes(self.node)

    async def images(self, params: dict[str, Any]) -> Any:
        return cluster_images(self.node)

    async def status(self, params: dict[str, Any]) -> Any:
        status = describe_self(self.node)
        status["state_dir"] = str(self.state_dir)
        status["primary_key_id"] = self.keyring.primary_id.hex()
        status["http_api"] = self.node.capabilities.http_api
        status["tls_fingerprint"] = self.node.capabilities.tls_fingerprint
        return status

    # ---- keyring ------------------------------------------------------------------------

    async def key_list(self, params: dict[str, Any]) -> Any:
        return self.keyring.describe()

    async def key_add(self, params: dict[str, Any]) -> Any:
        text = param(params, "key", str)
        key_id = self._rotate(lambda: self.keyring.add(_decode(text)))
        self.node.log.notice("cluster key added", key_id=key_id.hex())
        return {"key_id": key_id.hex()}

    async def key_use(self, params: dict[str, Any]) -> Any:
        key_id = _key_id(param(params, "key_id", str))
        self._rotate(lambda: self.keyring.use(key_id))
        self.node.log.notice("cluster key now primary", key_id=key_id.hex())
        return {"key_id": key_id.hex()}

    async def key_remove(self, params: dict[str, Any]) -> Any:
        key_id = _key_id(param(params, "key_id", str))
        self._rotate(lambda: self.keyring.remove(key_id))
        self.node.log.notice("cluster key removed", key_id=key_id.hex())
        return {"key_id": key_id.hex()}

    def _rotate(self, change: Callable[[], Any]) -> Any:
        try:
            result = change()
        except KeyringError as exc:
            raise ControlError(str(exc)) from None
        try:
            self.keyring.save(self.keyring_path)
        except OSError as exc:
            raise ControlError(
                f"the keyring changed but could not be saved to {self.keyring_path}: {exc.strerror}"
            ) from None
        return result

    # ---- labels -------------------------------------------------------------------------

    async def label_set(self, params: dict[str, Any]) -> Any:
        raw = param(params, "labels", dict)
        if not raw:
            raise ControlError("no labels given")
        try:
            given = parse_labels(raw, "labels")
        except RequirementsError as exc:
            raise ControlError(str(exc)) from None
        return self._save_labels({**self.config.labels, **given})

    async def label_remove(self, params: dict[str, Any]) -> Any:
        keys = param(params, "keys", list)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise ControlError("parameter 'keys': expected a non-empty list of label keys")
        unknown = [k for k in keys if k not in self.config.labels]
        if unknown:
            raise ControlError(f"no such label(s): {', '.join(unknown)}")
        return self._save_labels({k: v for k, v in self.config.labels.items() if k not in keys})

    def _save_config(self, **changes: Any) -> None:
        """formd.toml first: a change the file does not hold would be lost at the next start."""
        updated = replace(self.config, **changes)
        try:
            config_file.save(self.state_dir, updated)
        except OSError as exc:
            raise ControlError(f"cannot save formd.toml: {exc.strerror}") from None
        self.config = updated

    def _save_labels(self, labels: dict[str, str]) -> Any:
        self._save_config(labels=labels)
        self.node.set_labels(labels)
        self.node.log.info("labels changed", labels=",".join(f"{k}={v}" for k, v in sorted(labels.items())))
        return {"labels": dict(sorted(labels.items()))}

    # ---- named capabilities -----------------------------------------------------------

    async def capability_set(self, params: dict[str, Any]) -> Any:
        name, slots = param(params, "name", str), param(params, "max", int)
        try:
            check_name(name)
            check_slots(name, slots)
        except CapabilityNameError as exc:
            raise ControlError(str(exc)) from None
        named = {**self.config.named_capabilities, name: slots}
        if len(named) > MAX_NAMED:
            raise ControlError(f"a node offers at most {MAX_NAMED} named capabilities")
        return self._save_capabilities(named)

    async def capability_remove(self, params: dict[str, Any]) -> Any:
        name = param(params, "name", str)
        if name not in self.config.capabilities:
            raise ControlError(f"no such capability: {name}")
        return self._save_capabilities({k: v for k, v in self.config.named_capabilities.items() if k != name})

    def _save_capabilities(self, named: dict[str, int]) -> Any:
        """Running jobs keep the slots they hold; a lower max only stops new claims."""
        self._save_config(capabilities={name: {"max_concurrency": n} for name, n in sorted(named.items())})
        self.node.set_named_capabilities(named)
        self.node.log.info(
            "capabilities changed", capabilities=",".join(f"{k}={v}" for k, v in sorted(named.items()))
        )
        return {"capabilities": dict(sorted(named.items()))}


def _decode(text: str) -> bytes:
    try:
        return decode_key(text)
    except KeyringError as exc:
        raise ControlError(str(exc)) from None


def _key_id(text: str) -> bytes:
    try:
        return parse_key_id(text)
    except KeyringError as exc:
        raise ControlError(str(exc)) from None
