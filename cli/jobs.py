"""`form submit/status/jobs/cancel/explain/logs/result`: jobs through the local formd."""

from __future__ import annotations

import base64
import functools
import json
import os
import shlex
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import typer

from pack_manager.context_archive import ArchiveError, extract_archive, pack_context
from pack_manager.jobstate import FINAL_STATES

from . import blobs
from .client import ClientError
from .command import fail, request

# Job requests may wait for blob fetches and fsyncs on a busy node: more patience than the default.
_call = functools.partial(request, timeout=120)


def _upload(ctx: typer.Context, path: Path) -> str:
    """Hand the file to formd (open, when local: it copies and hashes it in one pass)."""
    try:
        return blobs.upload(ctx.obj["socket"], path)
    except ClientError as exc:
        fail(str(exc))


def submit(
    ctx: typer.Context,
    context_dir: Path = typer.Argument(..., help="directory packed as the job's context"),
    containerfile: str = typer.Option(
        "Containerfile", "-f", "--file", help="Containerfile inside the context (build)"
    ),
    kind: str = typer.Option("build", "--kind", help="build | run | wasm"),
    image: Optional[str] = typer.Option(None, "--image", help="local image (run)"),
    cmd: Optional[str] = typer.Option(
        None, "--cmd", help="command, split like a shell would (run; wasm arguments)"
    ),
    module: Optional[str] = typer.Option(None, "--module", help="wasm module: a path inside the context"),
    inputs: list[Path] = typer.Option([], "--input", help="file placed at /data/inputs/<name>"),
    cpu: Optional[str] = typer.Option(None, "--cpu"),
    memory: Optional[str] = typer.Option(None, "--memory"),
    disk: Optional[str] = typer.Option(None, "--disk"),
    gpu: Optional[int] = typer.Option(None, "--gpu"),
    gpu_model: Optional[str] = typer.Option(None, "--gpu-model"),
    gpu_memory: Optional[str] = typer.Option(None, "--gpu-memory"),
    label: list[str] = typer.Option([], "--label", help="k=v the node must have"),
    prefer: list[str] = typer.Option([], "--prefer", help="k=v nodes ranked first"),
    timeout: str = typer.Option("1h", "--timeout"),
    replicas: int = typer.Option(1, "--replicas"),
    network: bool = typer.Option(False, "--network"),
    prefer_local_inputs: bool = typer.Option(
        False, "--prefer-local-inputs", help="rank nodes that already hold the context/inputs first"
    ),
    wait: bool = typer.Option(False, "--wait", help="wait for a final state; exit 1 unless it succeeded"),
    follow: bool = typer.Option(False, "--follow", help="stream the log meanwhile (implies --wait)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Pack CONTEXT_DIR (and inputs) into the local store, write the signed job, print its id."""
    from metrics_agent.units import UnitError, parse_duration  # noqa: PLC0415

    try:
        timeout_s = parse_duration(timeout)
    except UnitError as exc:
        fail(f"--timeout: {exc}")
    if not context_dir.is_dir():
        fail(f"context {context_dir} is not a directory")
    try:
        command = shlex.split(cmd) if cmd else []
    except ValueError as exc:
        fail(f"--cmd: {exc}")
    for item in inputs:
        if not item.is_file():
            fail(f"input {item} is not a file")
    # The daemon's limits (formd.toml), checked here first so nothing is uploaded in vain.
    limits = _call(ctx, "job.limits")
    max_context, max_inputs = limits["max_context_bytes"], limits["max_input_bytes"]
    total_inputs = sum(item.stat().st_size for item in inputs)
    if total_inputs > max_inputs:
        fail(f"inputs hold {total_inputs:,} bytes together, over the node's {max_inputs:,}-byte limit")
    content = _content_bytes(context_dir)
    if content > max_context:
        fail(
            f"context {context_dir} holds {content:,} bytes of files, over the node's {max_context:,}-byte limit"
        )
    with tempfile.TemporaryDirectory(prefix="form-submit-") as tmp:
        tar = Path(tmp) / "context.tar"
        try:
            _, size = pack_context(context_dir, tar)
        except (ArchiveError, OSError) as exc:
            fail(f"context {context_dir}: {exc}")
        if size > max_context:
            fail(f"context {context_dir} packs to {size:,} bytes, over the node's {max_context:,}-byte limit")
        context = _upload(ctx, tar)
    uploaded = [[item.name, _upload(ctx, item)] for item in inputs]
    params = {
        "kind": kind,
        "context": context,
        "containerfile": containerfile,
        "image": image,
        "command": command,
        "module": module,
        "inputs": uploaded,
        "requirements": {
            "cpu": cpu,
            "memory": memory,
            "disk": disk,
            "gpu": gpu,
            "gpu_model": gpu_model,
            "gpu_memory": gpu_memory,
            "labels": label,
            "prefer": prefer,
        },
        "timeout_ms": int(timeout_s * 1000),
        "network": network,
        "replicas": replicas,
        "prefer_local_inputs": prefer_local_inputs,
    }
    job_id = _call(ctx, "job.submit", params)["id"]
    if not (wait or follow):
        typer.echo(json.dumps({"id": job_id}) if as_json else job_id)
        return
    if not as_json:
        typer.echo(job_id)
    if follow:
        _stream_log(ctx, job_id, True)
    status = _wait(ctx, job_id)
    if as_json:
        typer.echo(json.dumps(status, indent=2, sort_keys=True))
    else:
        typer.echo(f"{status['state']}: {status['reason']}")
    if status["state"] != "succeeded":
        raise typer.Exit(1)


def _content_bytes(root: Path) -> int:
    """Bytes of regular files under root, counted before packing so a huge context fails fast."""
    total = 0
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _wait(ctx: typer.Context, job_id: str) -> dict:
    while True:
        status = _call(ctx, "job.status", {"job": job_id})
        if status["state"] in FINAL_STATES or status["state"] == "unschedulable":
            return status
        time.sleep(0.2)


def job_status(
    ctx: typer.Context, job: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")
) -> None:
    """A job's state as this node sees it."""
    result = _call(ctx, "job.status", {"job": job})
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    for key in (
        "id",
        "state",
        "reason",
        "node",
        "attempt",
        "submitted_at",
        "started_at",
        "finished_at",
        "exit_code",
        "verified",
    ):
        typer.echo(f"{key}: {result[key]}")
    for out in result["outputs"]:
        typer.echo(f"output: {out['name']} {out['size']} bytes {out['digest']}")


def jobs(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every job this node knows."""
    result = _call(ctx, "job.list", {"state": state})
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    from .render import jobs_table, print_table  # noqa: PLC0415

    print_table(jobs_table(result))


def cancel(
    ctx: typer.Context, job: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Ask the runner to stop the job (works from any node)."""
    result = _call(ctx, "job.cancel", {"job": job})
    typer.echo(json.dumps(result) if as_json else f"cancel requested for {result['id']}")


def explain(
    ctx: typer.Context, job: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")
) -> None:
    """The ranked table this node computes for the job."""
    result = _call(ctx, "job.explain", {"job": job})
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    from .render import explain_table, print_table  # noqa: PLC0415

    prefer = "  prefer-local-inputs" if result.get("prefer_local_inputs") else ""
    typer.echo(
        f"job {result['id']}  policy {result['policy']}{prefer}  state {result['state']}: {result['reason']}"
    )
    print_table(explain_table(result["nodes"]))


def _download(ctx: typer.Context, digest: str, dest: Path) -> None:
    try:
        blobs.download(ctx.obj["socket"], digest, dest)
    except (ClientError, OSError) as exc:
        fail(str(exc))


def _stored_log(ctx: typer.Context, job: str, offset: int) -> tuple[dict, Any]:
    """job.log; from the local formd, a stored log comes as an open file (else None)."""
    target = ctx.obj["socket"]
    if not blobs.is_local(target):
        return _call(ctx, "job.log", {"job": job, "offset": offset}), None
    try:
        reply, files = blobs.call_files(target, "job.log", {"job": job, "offset": offset, "as_file": True})
        return reply, blobs.received_file(files, "the log") if files else None
    except ClientError as exc:
        fail(str(exc))


def _stream_log(ctx: typer.Context, job: str, follow: bool) -> str:
    """Print the log from the start; with follow, until the job is final. Returns the last state."""
    offset = 0
    while True:
        reply, stored = _stored_log(ctx, job, offset)
        if stored is not None:  # the whole stored log, open: copied from where we are
            with stored:
                blobs.copy(stored, sys.stdout.buffer, offset=offset)
            sys.stdout.flush()
            return reply["state"]
        data = base64.b64decode(reply["data"])
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            offset = reply["offset"]
            continue
        if reply["done"] or not follow:
            return reply["state"]
        time.sleep(0.2)


def logs(
    ctx: typer.Context,
    job: str = typer.Argument(...),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing until the job ends"),
) -> None:
    """The job's log (stdout and stderr): live from the runner, or stored once it ended."""
    _stream_log(ctx, job, follow)


def result(
    ctx: typer.Context,
    job: str = typer.Argument(...),
    output: Path = typer.Option(..., "-o", "--output"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fetch the outputs into DIR (outputs.tar is unpacked; image archives are saved as files)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"{output} exists and is not an empty directory")
    files = _call(ctx, "job.files", {"job": job, "which": "outputs"})
    output.mkdir(parents=True, exist_ok=True)
    written = []
    # Unpacked next to DIR's entries, so moving them in is a rename on the same filesystem.
    with tempfile.TemporaryDirectory(prefix=".form-result-", dir=output) as tmp:
        for item in files:
            if item["name"] != "outputs.tar":
                _download(ctx, item["digest"], output / item["name"])
                continue
            # Unpacked straight from formd's stored copy when local (checked, then extracted).
            try:
                with blobs.open_blob(ctx.obj["socket"], item["digest"]) as tar:
                    blobs.check_digest(tar, item["digest"])
                    extract_archive(tar, Path(tmp) / "outputs", limit_bytes=1 << 40)
            except (ClientError, ArchiveError, OSError) as exc:
                fail(f"outputs: {exc}")
            for entry in (Path(tmp) / "outputs").iterdir():
                entry.rename(output / entry.name)
        written = files
    typer.echo(
        json.dumps(written, indent=2) if as_json else f"fetched {len(written)} output(s) into {output}"
    )


def register(app: typer.Typer) -> None:
    for command in (submit, jobs, cancel, explain, logs, result):
        app.command(command.__name__)(command)
