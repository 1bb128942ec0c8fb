"""`form`: the user's client of the local formd, over its control socket.

Exit status 0 on success; otherwise one line `form: <why>` on stderr and status 1
(2 for usage errors, as typer does).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from metrics_agent.units import UnitError, parse_duration

from .client import SOCKET_ENV, default_socket
from .command import fail, request
from .datasets import register as register_dataset_commands
from .jobs import job_status
from .jobs import register as register_job_commands
from .remote import (
    DEFAULT_KEY,
    FINGERPRINT_ENV,
    KEY_ENV,
    REMOTE_ENV,
    RemoteError,
    RemoteTarget,
    generate_key,
    load_key,
)

app = typer.Typer(
    no_args_is_help=True, help="Talk to formd: the local socket, or a node's HTTPS API with --remote."
)
cluster_key_app = typer.Typer(
    no_args_is_help=True, help="Rotate the cluster key on this node (repeat on every node)."
)
label_app = typer.Typer(
    no_args_is_help=True, help="Change this node's labels at runtime (persisted to formd.toml)."
)
capability_app = typer.Typer(
    no_args_is_help=True,
    help="Change this node's named capabilities at runtime (persisted to formd.toml).",
)
key_app = typer.Typer(no_args_is_help=True, help="Client keys for the HTTPS API (form --remote).")
acl_app = typer.Typer(
    no_args_is_help=True, help="Which client keys may do what (admin; spreads to every node)."
)
app.add_typer(cluster_key_app, name="cluster-key")
app.add_typer(key_app, name="key")
token_app = typer.Typer(no_args_is_help=True, help="Short-lived read tokens for the dashboard.")
app.add_typer(acl_app, name="acl")
app.add_typer(token_app, name="token")
app.add_typer(label_app, name="label")
app.add_typer(capability_app, name="capability")


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


@app.callback()
def options(
    ctx: typer.Context,
    socket: Optional[Path] = typer.Option(
        None,
        "--socket",
        "-s",
        help=f"formd control socket (env {SOCKET_ENV}, default /var/lib/formd/formd.sock)",
    ),
    remote: Optional[str] = typer.Option(
        None,
        "--remote",
        envvar=REMOTE_ENV,
        help="a node's HTTPS API, https://HOST:PORT, instead of the socket",
    ),
    key: Path = typer.Option(DEFAULT_KEY, "--key", envvar=KEY_ENV, help="client key for --remote"),
    fingerprint: str = typer.Option(
        "",
        "--fingerprint",
        envvar=FINGERPRINT_ENV,
        help="SHA-256 of the node's certificate (form status shows it)",
    ),
) -> None:
    if remote and socket is None:  # an explicit --socket wins over FORM_REMOTE
        try:
            ctx.obj = {"socket": RemoteTarget(remote, load_key(key), fingerprint)}
        except RemoteError as exc:
            if ctx.invoked_subcommand == "key":
                ctx.obj = {"socket": None}
                return
            fail(str(exc))
        return
    ctx.obj = {"socket": socket or default_socket()}


@app.command()
def nodes(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print a JSON list")
) -> None:
    """Every node this formd knows: status, capabilities, free capacity, labels."""
    result = request(ctx, "nodes")
    if as_json:
        _print_json(result)
    else:
        from .render import nodes_table, print_table  # noqa: PLC0415 - rich: only for tables

        print_table(nodes_table(result))


@app.command()
def images(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print a JSON list")
) -> None:
    """Every image the cluster's nodes publish (names, id, size) and the nodes that hold it."""
    result = request(ctx, "images")
    if as_json:
        _print_json(result)
    else:
        from .render import images_table, print_table  # noqa: PLC0415 - rich: only for tables

        print_table(images_table(result))


@app.command()
def status(
    ctx: typer.Context,
    job: Optional[str] = typer.Argument(
        None, help="a job id or prefix (>= 8 hex); without it, this node's status"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """A job's state (form status JOB), or this node: id, address, incarnation, peers, traffic."""
    if job is not None:
        job_status(ctx, job, as_json)
        return
    result = request(ctx, "status")
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        if not isinstance(value, (dict, list)):
            typer.echo(f"{key}: {value}")


@cluster_key_app.command("generate")
def cluster_key_generate(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="write to this file (mode 0600) instead of stdout"
    ),
) -> None:
    """Make a new random cluster key (no daemon needed)."""
    text = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
    if output is None:
        typer.echo(text)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{output} exists; refusing to overwrite a key")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    typer.echo(f"wrote {output}")


@cluster_key_app.command("list")
def cluster_key_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Key ids in this node's keyring and which one seals outgoing frames."""
    result = request(ctx, "cluster-key.list")
    if as_json:
        _print_json(result)
    else:
        from .render import keys_table, print_table  # noqa: PLC0415 - rich: only for tables

        print_table(keys_table(result))


@cluster_key_app.command("add")
def cluster_key_add(
    ctx: typer.Context,
    key_file: Path = typer.Argument(..., help="file holding the key (base64 line); - for stdin"),
) -> None:
    """Add a key: frames under it are accepted; the primary still seals."""
    try:
        text = sys.stdin.read() if str(key_file) == "-" else key_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {key_file}: {getattr(exc, 'strerror', None) or exc}")
    result = request(ctx, "cluster-key.add", {"key": text.strip()})
    typer.echo(result["key_id"])


@cluster_key_app.command("use")
def cluster_key_use(
    ctx: typer.Context, key_id: str = typer.Argument(..., help="key id (hex) from `form cluster-key list`")
) -> None:
    """Make a key in the keyring the primary (it seals from now on)."""
    request(ctx, "cluster-key.use", {"key_id": key_id})
    typer.echo(f"primary key is now {key_id}")


@cluster_key_app.command("remove")
def cluster_key_remove(ctx: typer.Context, key_id: str = typer.Argument(...)) -> None:
    """Drop a key that is no longer primary: frames under it are refused from now on."""
    request(ctx, "cluster-key.remove", {"key_id": key_id})
    typer.echo(f"removed {key_id}")


@label_app.command("set")
def label_set(ctx: typer.Context, pairs: list[str] = typer.Argument(..., help="key=value ...")) -> None:
    """Set (or change) labels on this node."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"{pair!r} is not key=value")
        labels[key] = value
    result = request(ctx, "label.set", {"labels": labels})
    typer.echo(",".join(f"{k}={v}" for k, v in sorted(result["labels"].items())) or "(no labels)")


@label_app.command("remove")
def label_remove(ctx: typer.Context, keys: list[str] = typer.Argument(..., help="label keys")) -> None:
    """Remove labels from this node."""
    result = request(ctx, "label.remove", {"keys": keys})
    typer.echo(",".join(f"{k}={v}" for k, v in sorted(result["labels"].items())) or "(no labels)")


def _print_capabilities(result: dict) -> None:
    typer.echo(",".join(f"{k}={v}" for k, v in result["capabilities"].items()) or "(no capabilities)")


@capability_app.command("set")
def capability_set(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="e.g. inference:llama3"),
    max_concurrency: int = typer.Option(..., "--max", help="jobs that may hold it at once"),
) -> None:
    """Offer a named capability (or change its slots)."""
    _print_capabilities(request(ctx, "capability.set", {"name": name, "max": max_concurrency}))


@capability_app.command("remove")
def capability_remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Stop offering a named capability (running jobs keep their slots)."""
    _print_capabilities(request(ctx, "capability.remove", {"name": name}))


@key_app.command("generate")
def key_generate(
    output: Path = typer.Option(DEFAULT_KEY, "--output", "-o", help="where to write the key (mode 0600)"),
) -> None:
    """Make an Ed25519 client key; prints its public key last (give that to an admin)."""
    try:
        public = generate_key(output)
    except (RemoteError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {output.expanduser()}")
    typer.echo(public)


@acl_app.command("grant")
def acl_grant(
    ctx: typer.Context,
    public_key: str = typer.Argument(..., help="the client's public key (64 hex)"),
    role: str = typer.Option(..., "--role", help="read, submit or admin"),
    max_running: Optional[int] = typer.Option(
        None, "--max-running", help="at most this many queued+running jobs"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Give a client key a role (replaces its earlier grant)."""
    result = request(ctx, "acl.grant", {"key": public_key, "role": role, "max_running": max_running})
    _print_json(result) if as_json else typer.echo(f"{result['key'][:16]} {result['role']}")


@acl_app.command("revoke")
def acl_revoke(ctx: typer.Context, public_key: str = typer.Argument(...)) -> None:
    """Take every role from a client key."""
    result = request(ctx, "acl.revoke", {"key": public_key})
    typer.echo(f"{result['key'][:16]} revoked")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: str = typer.Option("read", "--role", help="read (the only role a token may carry)"),
    ttl: str = typer.Option("1h", "--ttl", help="how long it works: 90s, 30m, 1h, 2d"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A short-lived read token for the dashboard; prints the dashboard URL with it."""
    try:
        ttl_ms = int(parse_duration(ttl) * 1000)
    except UnitError as exc:
        fail(f"--ttl: {exc}")
    result = request(ctx, "token.create", {"role": role, "ttl_ms": ttl_ms})
    if as_json:
        _print_json(result)
        return
    typer.echo(f"valid until {result['expires_at']}")
    typer.echo(result["url"] or result["token"])


@acl_app.command("list")
def acl_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every grant the cluster holds."""
    rows = request(ctx, "acl.list")
    if as_json:
        _print_json(rows)
        return
    from .render import acl_table, print_table  # noqa: PLC0415 - rich: only for tables

    print_table(acl_table(rows))


register_job_commands(app)
register_dataset_commands(app)


def main() -> None:
    app(prog_name="form")


if __name__ == "__main__":
    main()
