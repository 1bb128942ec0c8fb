"""`formd init` and `formd run`.

    formd init --state-dir DIR --listen HOST:PORT [--advertise HOST:PORT] [--seed HOST:PORT ...]
               (--cluster-key-file FILE | --new-cluster-key) [--label k=v ...] [--region R]
               [--capability NAME=MAX ...] [--set key=value ...]
    formd run  --state-dir DIR

init validates everything before it writes anything, refuses to replace an existing
identity, and prints the node id (64 hex) as its last line. Exit status: 0 ok, 1 on any error
(one line `formd: <why>` on stderr), 2 for usage errors.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import trio
import typer

from daemon import config as config_file
from daemon.advertise import default_advertise
from daemon.config import CONFIG_NAME, DEFAULT_PORT, ConfigError, from_mapping, split_address
from daemon.identity import IdentityError, create_identity
from daemon.transport.keyring import Keyring, KeyringError
from metrics_agent.named_capabilities import CapabilityNameError, parse_assignment
from pack_manager.requirements import RequirementsError, parse_labels

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="formd: the formnet peer daemon.",
)

DEFAULT_STATE_DIR = Path("/var/lib/formd")


def _fail(message: str) -> None:
    typer.echo(f"formd: {message}", err=True)
    raise typer.Exit(1)


def _parse_set(items: list[str]) -> dict[str, Any]:
    """--set key=value, the value in TOML syntax (a bare word is taken as a string)."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        values[key.strip()] = value
    return values


@app.command()
def init(
    state_dir: Path = typer.Option(
        DEFAULT_STATE_DIR, "--state-dir", help="where formd keeps its key, config and document"
    ),
    listen: str = typer.Option(f"0.0.0.0:{DEFAULT_PORT}", "--listen", help="host:port to serve gossip on"),
    http_listen: Optional[str] = typer.Option(
        None, "--http-listen", help='host:port of the HTTPS API (default 127.0.0.1:7947; "" turns it off)'
    ),
    advertise: Optional[str] = typer.Option(
        None,
        "--advertise",
        help="host:port peers dial (default: the listen address; with 0.0.0.0 or :: the local address the "
        "kernel routes towards the first seed, or the default route's)",
    ),
    seeds: list[str] = typer.Option([], "--seed", help="host:port of a node to join through (repeatable)"),
    cluster_key_file: Optional[Path] = typer.Option(
        None, "--cluster-key-file", help="the cluster's key file"
    ),
    new_cluster_key: bool = typer.Option(
        False, "--new-cluster-key", help="start a new cluster with a fresh key"
    ),
    labels: list[str] = typer.Option([], "--label", help="key=value label of this node (repeatable)"),
    region: Optional[str] = typer.Option(None, "--region", help="the region this node is in"),
    capabilities: list[str] = typer.Option(
        [], "--capability", help="NAME=MAX: a named capability with MAX concurrent jobs (repeatable)"
    ),
    settings: list[str] = typer.Option([], "--set", help="any formd.toml setting as key=value (repeatable)"),
) -> None:
    """Create this node's identity, cluster key and formd.toml."""
    if (cluster_key_file is None) == (not new_cluster_key):
        _fail("give exactly one of --cluster-key-file FILE or --new-cluster-key")
    key_path = state_dir / "node.key"
    if key_path.exists():
        _fail(f"{state_dir} already holds an identity ({key_path}); refusing to overwrite it")
    try:
        raw: dict[str, Any] = _parse_set(settings)
        raw.update({"listen": listen, "seeds": list(seeds)})
        if http_listen is not None:
            raw["http_listen"] = http_listen
        raw["labels"] = parse_labels(labels, "--label")
        if region is not None:
            raw["region"] = region
        if capabilities:
            named = dict(parse_assignment(item) for item in capabilities)
            raw["capabilities"] = {name: {"max_concurrency": n} for name, n in named.items()}
        raw["advertise"] = advertise or raw.get("advertise") or default_advertise(listen, seeds)
        config = from_mapping(raw)
        keyring = Keyring.load(cluster_key_file) if cluster_key_file is not None else Keyring.generate()
    except (ConfigError, RequirementsError, KeyringError, CapabilityNameError) as exc:
        _fail(str(exc))
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keyring_path = config.path(state_dir, config.cluster_key_file)
        keyring.save(keyring_path)
        config_file.save(state_dir, config)
        identity = create_identity(config.path(state_dir, config.node_key_file))
        hosts = [split_address(config.advertise_address, "advertise")[0]]
        if config.http_address:
            hosts.append(split_address(config.http_address, "http_advertise")[0])
        from daemon.control.tls import create_certificate  # noqa: PLC0415 - x509: only for init

        fingerprint = create_certificate(state_dir, identity.node_hex, sorted(set(hosts)))
    except (OSError, IdentityError, KeyringError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {state_dir / CONFIG_NAME}")
    if new_cluster_key:
        typer.echo(f"new cluster key in {keyring_path} (give it to other nodes with --cluster-key-file)")
    typer.echo(f"listening on {config.listen}, advertising {config.advertise_address}")
    if config.http_address:
        typer.echo(f"HTTPS API on {config.http_listen}: https://{config.http_address}")
    typer.echo(f"certificate fingerprint (SHA-256): {fingerprint}")
    typer.echo(identity.node_hex)


@app.command()
def run(
    state_dir: Path = typer.Option(
        DEFAULT_STATE_DIR, "--state-dir", help="the directory `formd init` prepared"
    ),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="debug, info, notice, warning, error"),
) -> None:
    """Run the node in the foreground (what the systemd unit runs)."""
    from daemon.log import EventLog, setup_logging  # noqa: PLC0415
    from daemon.runtime import run_daemon  # noqa: PLC0415 - trio-heavy, only for `run`

    try:
        config = config_file.load(state_dir)
        if log_level is not None:
            config = replace(config, log_level=log_level).validated()
    except ConfigError as exc:
        _fail(str(exc))
    setup_logging(config.log_level, log_format=config.log_format)
    log = EventLog()
    try:
        code = trio.run(run_daemon, state_dir, config, log)
    except Exception as exc:
        reason = _start_failure(exc)
        if reason is None:
            raise
        _fail(reason)
    raise typer.Exit(code)


def _start_failure(exc: BaseException) -> str | None:
    """The one-line reason for a failure an operator can fix (busy port, bad key file,
    store locked by another formd), digging through trio's exception groups."""
    from crdt_state.persistence import StoreError  # noqa: PLC0415

    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            reason = _start_failure(inner)
            if reason is not None:
                return reason
        return None
    if isinstance(exc, (IdentityError, KeyringError, StoreError, ConfigError, OSError)):
        return str(exc)
    return None


def main() -> None:
    app(prog_name="formd")


if __name__ == "__main__":
    sys.exit(main())
