"""`form dataset add/remove` and `form datasets`: data that stays on its node (compute-to-data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .command import fail, request

dataset_app = typer.Typer(
    no_args_is_help=True, help="Offer data on this node to jobs that come to it; it never leaves."
)


@dataset_app.command("add")
def dataset_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the name jobs use: --dataset NAME, /data/datasets/NAME"),
    path: Path = typer.Argument(..., help="a file or directory on this node (referenced in place)"),
    description: str = typer.Option("", "--description"),
    allow_image: list[str] = typer.Option([], "--allow-image", help="image name or id jobs may use"),
    allow_algorithm: list[str] = typer.Option(
        [], "--allow-algorithm", help="blake3 of an allowed context or module (form context-digest DIR)"
    ),
    allow_client: list[str] = typer.Option(
        [], "--allow-client", help="client key (HTTPS) or node id that may submit jobs"
    ),
    max_output: Optional[str] = typer.Option(None, "--max-output", help="cap on outputs + log, e.g. 10MiB"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Hash NAME's files and publish a signed record of it (the data stays here)."""
    result = request(
        ctx,
        "dataset.add",
        {
            "name": name,
            "path": str(path.resolve()),
            "description": description,
            "allow_images": allow_image,
            "allow_algorithms": allow_algorithm,
            "allow_clients": allow_client,
            "max_output": max_output,
        },
    )
    for warning in result.get("warnings", []):
        typer.echo(f"form: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        typer.echo(f"{result['name']} {result['digest']} {result['files']} files {result['size']} bytes")


@dataset_app.command("remove")
def dataset_remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Stop offering NAME from this node (its files are left alone)."""
    request(ctx, "dataset.remove", {"name": name})
    typer.echo(f"removed {name}")


def datasets(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every dataset in the cluster and the nodes holding it."""
    result = request(ctx, "dataset.list")
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    from .render import datasets_table, print_table  # noqa: PLC0415

    print_table(datasets_table(result))


def context_digest(directory: Path = typer.Argument(..., help="a job's context directory")) -> None:
    """The digest `form submit` gives this context: what --allow-algorithm names."""
    import tempfile  # noqa: PLC0415

    from pack_manager.context_archive import ArchiveError, pack_context  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="form-digest-") as tmp:
        try:
            digest, _ = pack_context(directory, Path(tmp) / "context.tar")
        except (ArchiveError, OSError) as exc:
            fail(f"context {directory}: {exc}")
    typer.echo(digest)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    app.command("datasets")(datasets)
    app.command("context-digest")(context_digest)
