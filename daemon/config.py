"""formd.toml: every setting of one node, each with a default.

The file lives in the state dir. `formd init` writes it; `formd run` reads it; the control
socket's `label.set` rewrites it so a label survives a restart. Paths in it are relative to
the state dir unless absolute, so a state dir can be moved as a whole.

Reading is strict: an unknown key, a wrong type or an out-of-range value is a ConfigError
naming the key, never a silent default, because a typo in a timeout should not turn into a
cluster that flaps.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from metrics_agent.capabilities import check_region
from metrics_agent.named_capabilities import CapabilityNameError, check_named
from pack_manager.requirements import RequirementsError, parse_labels

CONFIG_NAME = "formd.toml"
DEFAULT_PORT = 7946
POLICIES = ("hashed-xor", "xor")
LOG_LEVELS = ("debug", "info", "notice", "warning", "error")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """formd.toml (or a command-line value bound for it) is not acceptable; says which key."""


@dataclass(frozen=True)
class FormdConfig:
    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    # The address peers dial; empty means "the listen address" (which must then be a real
    # host, not 0.0.0.0 -- `formd init` fills it in).
    advertise: str = ""
    seeds: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    region: str = ""  # "" names no region; jobs submitted with --region never fit here then
    # Named capabilities, as in the file: {"inference:llama3": {"max_concurrency": 2}}.
    capabilities: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    node_key_file: str = "node.key"
    cluster_key_file: str = "cluster.key"
    socket: str = "formd.sock"
    socket_mode: str = "0660"  # octal, as for chmod
    podman_url: str = ""  # empty: use a running service or start one in the state dir
    executors: tuple[str, ...] = ("podman", "wasm")  # the ones this node may offer if usable
    # Where CDI specs are read to find which GPUs a container can be given (Podman 4.3 itself
    # reads /etc/cdi and /var/run/cdi).
    cdi_spec_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
    # Defaults from memberlist's LAN profile.
    gossip_interval_ms: int = 200
    gossip_fanout: int = 3
    retransmit_mult: int = 4  # for updates that change what a node is (labels, status, ...)
    heartbeat_retransmit_mult: int = (
        1  # for updates that only advance heartbeat/capacity (see daemon/cluster/gossip.py)
    )
    anti_entropy_interval_s: float = 30.0
    tick_interval_ms: int = 1000
    # Liveness (daemon/cluster/membership.py): suspect after suspect_mult x log10(max(n,10)) ticks
    # without a heartbeat advance, dead after dead_mult times that.
    suspect_mult: float = 4.0
    dead_mult: float = 3.0
    # SWIM probes (daemon/cluster/probes.py): one peer pinged per interval, indirect_probes others asked
    # to ping it when it does not ack within probe_timeout_ms; suspicion -> dead after
    # suspect_mult x log10(max(n,10)) probe intervals. The record is refreshed every
    # tick x max(1, n / record_refresh_rate) (daemon/cluster/record_refresh.py).
    probe_interval_ms: int = 1000
    probe_timeout_ms: int = 500
    indirect_probes: int = 3
    record_refresh_rate: float = 3.0
    request_timeout_ms: int = 2000
    max_frame_bytes: int = 4 * 1024 * 1024
    snapshot_interval_s: float = 300.0
    log_level: str = "info"
    policy: str = "hashed-xor"
    # Jobs: what this node accepts at submit (checked again by the runner before it stages).
    max_context_bytes: int = 256 * 1024**2
    max_input_bytes: int = 1024**3  # all of a job's inputs together
    # Finished jobs stay in the document this long, then are retired with their blobs.
    job_retention_s: float = 86_400.0
    # The HTTPS API (daemon/control/http_api.py); empty turns it off. Clients sign requests
    # with their key; /metrics answers without a key only to addresses in metrics_allow.
    http_listen: str = "127.0.0.1:7947"
    http_advertise: str = ""  # the address clients and `form nodes` show; empty: http_listen
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # The local socket's group (name or gid): its members act as admin through the socket.
    socket_group: str = ""
    log_format: str = "text"  # "text" (journald priorities) or "json" (one object per line)
    # Images (daemon/jobs/images.py): Podman's auth.json for registry pulls (empty: none), how
    # long one pull may take, and the bytes of images formd itself added (loaded from a peer,
    # pulled, built with --tag) kept before the least recently used go.
    registry_auth_file: str = ""
    # Registries ("host:port") pulled from without TLS verification (plain HTTP allowed), as
    # Podman's registries.conf `insecure = true` does.
    insecure_registries: tuple[str, ...] = ()
    registry_timeout_s: float = 300.0
    image_cache_bytes: int = 10 * 1024**3

    @property
    def advertise_address(self) -> str:
        return self.advertise or self.listen

    @property
    def named_capabilities(self) -> dict[str, int]:
        """{name: max_concurrency}, as NodeCapabilities carries them."""
        return {name: table["max_concurrency"] for name, table in self.capabilities.items()}

    @property
    def http_address(self) -> str:
        """The HTTPS API's address for clients ("" when off): a listen on 0.0.0.0 is shown with
        the gossip advertise host."""
        if not self.http_listen:
            return ""
        if self.http_advertise:
            return self.http_advertise
        host, port = split_address(self.http_listen, "http_listen")
        if host in ("0.0.0.0", "::"):
            host = split_address(self.advertise_address, "advertise")[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def socket_gid(self) -> int | None:
        """The gid of socket_group (a name or a number), None when unset."""
        if not self.socket_group:
            return None
        if self.socket_group.isdigit():
            return int(self.socket_group)
        try:
            return grp.getgrnam(self.socket_group).gr_gid
        except KeyError:
            raise ConfigError(f"socket_group: no group {self.socket_group!r} on this host") from None

    @property
    def socket_permissions(self) -> int:
        text = self.socket_mode
        if (
            not isinstance(text, str)
            or not text
            or any(ch not in "01234567" for ch in text)
            or int(text, 8) > 0o777
        ):
            raise ConfigError(f'socket_mode: {text!r} is not an octal mode such as "0660"')
        return int(text, 8)

    def path(self, state_dir: Path, value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else state_dir / candidate

    def validated(self) -> "FormdConfig":
        check_address(self.listen, "listen", allow_any=True)
        host, _ = split_address(self.advertise_address, "advertise")
        if host in ("0.0.0.0", "::", ""):
            raise ConfigError('advertise: peers cannot dial 0.0.0.0; set advertise = "host:port"')
        for seed in self.seeds:
            check_address(seed, "seeds")
        for registry in self.insecure_registries:
            if not registry or "/" in registry or any(ch.isspace() for ch in registry):
                raise ConfigError(
                    f'insecure_registries: {registry!r} is not a registry host such as "host:5000"'
                )
        try:
            labels = parse_labels(dict(self.labels), "labels")
        except RequirementsError as exc:
            raise ConfigError(str(exc)) from exc
        capabilities = _capability_tables(self.capabilities)
        if self.region:
            try:
                check_region(self.region)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        for name in self.executors:
            if name not in ("podman", "wasm"):
                raise ConfigError(f"executors: unknown executor {name!r} (known: podman, wasm)")
        _range("gossip_interval_ms", self.gossip_interval_ms, 10, 60_000)
        _range("gossip_fanout", self.gossip_fanout, 1, 64)
        _range("retransmit_mult", self.retransmit_mult, 1, 64)
        _range("heartbeat_retransmit_mult", self.heartbeat_retransmit_mult, 1, 64)
        _range("anti_entropy_interval_s", self.anti_entropy_interval_s, 0.1, 86_400)
        _range("tick_interval_ms", self.tick_interval_ms, 10, 600_000)
        _range("suspect_mult", self.suspect_mult, 0.5, 1000)
        _range("dead_mult", self.dead_mult, 1.01, 1000)
        _range("probe_interval_ms", self.probe_interval_ms, 20, 600_000)
        _range("probe_timeout_ms", self.probe_timeout_ms, 10, 600_000)
        if self.probe_timeout_ms >= self.probe_interval_ms:
            raise ConfigError("probe_timeout_ms: must be shorter than probe_interval_ms")
        _range("indirect_probes", self.indirect_probes, 0, 16)
        _range("record_refresh_rate", self.record_refresh_rate, 0.01, 1000)
        _range("request_timeout_ms", self.request_timeout_ms, 10, 600_000)
        _range("max_frame_bytes", self.max_frame_bytes, 64 * 1024, 256 * 1024 * 1024)
        _range("snapshot_interval_s", self.snapshot_interval_s, 1, 86_400 * 7)
        _range("max_context_bytes", self.max_context_bytes, 1024, 64 * 1024**3)
        _range("max_input_bytes", self.max_input_bytes, 0, 1024**4)
        _range("job_retention_s", self.job_retention_s, 1, 365 * 86_400)
        if self.http_listen:
            check_address(self.http_listen, "http_listen", allow_any=True)
        if self.http_advertise:
            check_address(self.http_advertise, "http_advertise")
        for network in self.metrics_allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"metrics_allow: {network!r} is not an address or network") from None
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        _range("registry_timeout_s", self.registry_timeout_s, 1, 86_400)
        _range("image_cache_bytes", self.image_cache_bytes, 0, 1024**5)
        self.socket_permissions  # raises ConfigError when not octal
        self.socket_gid  # raises ConfigError for an unknown group
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.policy not in POLICIES:
            raise ConfigError(f"policy: {self.policy!r} is not one of {', '.join(POLICIES)}")
        for key in ("node_key_file", "cluster_key_file", "socket"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        return replace(self, labels=labels, capabilities=capabilities)


def _capability_tables(raw: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """[capabilities] "name" = { max_concurrency = N }, every name and count checked."""
    named = {}
    for name, table in raw.items():
        if not isinstance(table, Mapping) or set(table) != {"max_concurrency"}:
            raise ConfigError(
                f"capabilities: {name!r} must be a table {{ max_concurrency = N }}, got {table!r}"
            )
        named[name] = table["max_concurrency"]
    try:
        return {name: {"max_concurrency": n} for name, n in check_named(named, "capabilities").items()}
    except CapabilityNameError as exc:
        raise ConfigError(str(exc)) from exc


def split_address(text: str, key: str) -> tuple[str, int]:
    if not isinstance(text, str):
        raise ConfigError(f'{key}: expected "host:port", got {type(text).__name__}')
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{key}: {text!r} is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{key}: port {port} is outside 1..65535")
    return host, port


def check_address(text: str, key: str, *, allow_any: bool = False) -> None:
    host, _ = split_address(text, key)
    if not allow_any and host in ("0.0.0.0", "::"):
        raise ConfigError(f"{key}: {text!r} is not an address one can dial")


def _range(key: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is outside {low}..{high}")


_TYPES: dict[str, type] = {f.name: f.type for f in fields(FormdConfig)}  # type: ignore[misc]


def from_mapping(raw: Mapping[str, Any]) -> FormdConfig:
    values: dict[str, Any] = {}
    defaults = FormdConfig()
    for key, value in raw.items():
        if key not in _TYPES:
            raise ConfigError(f"unknown setting {key!r}")
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key}: expected a list of strings")
            value = tuple(value)
        elif isinstance(default, Mapping):
            if not isinstance(value, dict):
                raise ConfigError(f'{key}: expected a table of key = "value"')
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{key}: expected a string, got {type(value).__name__}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}: expected a number, got {type(value).__name__}")
            value = float(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}: expected an integer, got {type(value).__name__}")
        values[key] = value
    return FormdConfig(**values).validated()


def load(state_dir: Path) -> FormdConfig:
    path = state_dir / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: not found (run `formd init --state-dir {state_dir}` first)") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return from_mapping(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def render(config: FormdConfig) -> str:
    """The TOML text for a config: every key written out, so the file documents itself."""
    lines = [
        "# formd settings; every key has a default (see the README). Paths are relative to this directory."
    ]
    tables: list[str] = []
    for key, value in asdict(config).items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables.extend(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in sorted(value.items()))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines + tables) + "\n"


def save(state_dir: Path, config: FormdConfig) -> None:
    """Write formd.toml atomically (a crash leaves the old or the new file, never half)."""
    path = state_dir / CONFIG_NAME
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(render(config))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: { max_concurrency = 2 }
        return "{ " + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch >= " " and ch != "\x7f" else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'
