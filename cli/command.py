"""What every `form` command does on failure and to ask formd: one line `form: <why>` on
stderr and exit status 1."""

from __future__ import annotations

from typing import Any, NoReturn

import typer

from .client import ClientError, call


def fail(message: str) -> NoReturn:
    typer.echo(f"form: {message}", err=True)
    raise typer.Exit(1)


def request(
    ctx: typer.Context, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
) -> Any:
    """formd's result for one request over the command's socket, or fail with its reason."""
    try:
        return call(ctx.obj["socket"], method, params, timeout=timeout)
    except ClientError as exc:
        fail(str(exc))
