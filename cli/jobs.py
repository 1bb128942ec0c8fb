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
from typing import Any, Callable, Optional, TypeVar

import typer

from pack_manager.context_archive import ArchiveError, extract_archive, file_digest, pack_context
from pack_manager.jobstate import FINAL_STATES

from . import blobs
from .client import ClientError
from .command import fail, request
from .progress import transfer_bar
from .remote import RemoteError, RemoteTarget

T = TypeVar("T")
# Job requests may wait for blob fetches and fsyncs on a busy node: more patience than the default.
_call = functools.partial(request, timeout=120)


def _upload(ctx: typer.Context, path: Path, as_json: bool = False) -> str:
    """Store a file in the daemon's blob store (as one PUT body over HTTPS with --remote, passed
    open over the socket); returns its digest."""
    target = ctx.obj["socket"]
    if isinstance(target, RemoteTarget):
        from . import remote_blobs  # noqa: PLC0415 - httpx: only for --remote

        return _remote(remote_blobs.upload, target, path, as_json=as_json)
    # Locally: formd takes the open file and copies and hashes it in one pass.
    size = path.stat().st_size
    with transfer_bar(f"upload {path.name}", size, as_json=as_json) as advance:
        try:
            digest = blobs.upload(target, path)
        except ClientError as exc:
            fail(str(exc))
        advance(size)
    return digest


def _remote(transfer: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A streamed transfer with a node's HTTPS API (cli/remote_blobs.py), failing like `_call`."""
    try:
        return transfer(*args, **kwargs)
    except RemoteError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{getattr(exc, 'filename', None) or 'transfer'}: {exc.strerror or exc}")


# Submit options a job file may set too (pack_manager/jobfile.py), with their defaults.
SUBMIT_DEFAULTS: dict[str, Any] = {
    "context": None,
    "file": "Containerfile",
    "kind": "build",
    "image": None,
    "pull": "missing",
    "tag": None,
    "cmd": None,
    "module": None,
    "input": [],
    "cpu": None,
    "memory": None,
    "disk": None,
    "gpu": None,
    "gpu_model": None,
    "gpu_memory": None,
    "label": [],
    "prefer": [],
    "select": [],
    "capability": [],
    "region": None,
    "placement_key": None,
    "retries": 0,
    "retry_delay": "1s",
    "queue_timeout": None,
    "shards": 0,
    "split_inputs": False,
    "env": [],
    "timeout": "1h",
    "replicas": 1,
    "network": False,
    "prefer_local_inputs": False,
    "dataset": [],
}


def submit(
    ctx: typer.Context,
    context: Optional[Path] = typer.Argument(
        None, help="directory packed as the job's context (with --spec: default the file's directory)"
    ),
    job_file: Optional[Path] = typer.Option(
        None, "--spec", help="job file (TOML): keys named like these options; flags given here override it"
    ),
    file: Optional[str] = typer.Option(None, "-f", "--file", help="Containerfile inside the context (build)"),
    kind: Optional[str] = typer.Option(None, "--kind", help="build | run | wasm"),
    image: Optional[str] = typer.Option(
        None,
        "--image",
        help="image (run): NAME[:TAG], registry/path[:TAG] or an id; fetched from a node that holds it",
    ),
    pull: Optional[str] = typer.Option(
        None, "--pull", help="run: missing (registry only when no node holds it; default) | always | never"
    ),
    tag: Optional[str] = typer.Option(
        None,
        "--tag",
        help="build: keep the built image on the builder as NAME[:TAG] (runs elsewhere fetch it)",
    ),
    cmd: Optional[str] = typer.Option(
        None, "--cmd", help="command, split like a shell would (run; wasm arguments)"
    ),
    module: Optional[str] = typer.Option(None, "--module", help="wasm module: a path inside the context"),
    input: list[Path] = typer.Option([], "--input", help="file placed at /data/inputs/<name>"),
    cpu: Optional[str] = typer.Option(None, "--cpu"),
    memory: Optional[str] = typer.Option(None, "--memory"),
    disk: Optional[str] = typer.Option(None, "--disk"),
    gpu: Optional[int] = typer.Option(None, "--gpu"),
    gpu_model: Optional[str] = typer.Option(None, "--gpu-model"),
    gpu_memory: Optional[str] = typer.Option(None, "--gpu-memory"),
    label: list[str] = typer.Option([], "--label", help="k=v the node must have"),
    prefer: list[str] = typer.Option([], "--prefer", help="k=v nodes ranked first"),
    select: list[str] = typer.Option(
        [],
        "--select",
        help="label selector the node must match: k=v, k!=v, 'k in (a,b)', k, !k, k>=N (repeatable)",
    ),
    capability: list[str] = typer.Option(
        [],
        "--capability",
        help="named capability the node must offer, one slot held while it runs; prefix:* matches",
    ),
    region: Optional[str] = typer.Option(None, "--region", help="the region the node must be in"),
    placement_key: Optional[str] = typer.Option(
        None,
        "--placement-key",
        help="rank nodes by this key instead of the job id (jobs sharing it land together)",
    ),
    retries: Optional[int] = typer.Option(
        None, "--retries", help="retry a failed or timed-out run on the next ranked node, up to N times"
    ),
    retry_delay: Optional[str] = typer.Option(
        None, "--retry-delay", help="wait before the first retry, doubling for each next (default 1s)"
    ),
    queue_timeout: Optional[str] = typer.Option(
        None, "--queue-timeout", help="fail the job when no run has started this long after submit"
    ),
    shards: Optional[int] = typer.Option(
        None, "--shards", help="run as N shards on the first N ranked capable nodes (FORM_SHARD_INDEX/COUNT)"
    ),
    split_inputs: Optional[bool] = typer.Option(
        None, "--split-inputs/--no-split-inputs", help="with --shards: shard i gets inputs i, i+N, ..."
    ),
    env: list[str] = typer.Option([], "--env", help="K=V set in the job's environment (repeatable)"),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="default 1h"),
    replicas: Optional[int] = typer.Option(None, "--replicas"),
    network: Optional[bool] = typer.Option(None, "--network/--no-network"),
    prefer_local_inputs: Optional[bool] = typer.Option(
        None,
        "--prefer-local-inputs/--no-prefer-local-inputs",
        help="rank nodes that already hold the context/inputs/image first",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="write nothing; print the ranked table this node computes for the job"
    ),
    dataset: list[str] = typer.Option(
        [], "--dataset", help="run on a node holding this dataset, mounted at /data/datasets/NAME"
    ),
    wait: bool = typer.Option(False, "--wait", help="wait for a final state; exit 1 unless it succeeded"),
    follow: bool = typer.Option(False, "--follow", help="stream the log meanwhile (implies --wait)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Pack the context (and inputs) into the local store, write the signed job, print its id."""
    given = {key: value for key, value in locals().items() if key in SUBMIT_DEFAULTS}
    options = _submit_options(given, job_file)
    if dry_run:
        _dry_run(ctx, options, as_json)
        return
    submitted = _call(ctx, "job.submit", _submit_params(ctx, options, upload=True, as_json=as_json))
    job_id = submitted["id"]
    if not (wait or follow):
        typer.echo(json.dumps(submitted) if as_json else job_id)
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


def _submit_options(given: dict[str, Any], job_file: Path | None) -> dict[str, Any]:
    """The job file's values, the flags given on top, the defaults for the rest."""
    from pack_manager.jobfile import JobFileError, load_job_file  # noqa: PLC0415

    options = dict(SUBMIT_DEFAULTS)
    if job_file is not None:
        try:
            from_file = load_job_file(job_file)
        except JobFileError as exc:
            fail(str(exc))
        if "env" in from_file:
            from_file["env"] = [f"{k}={v}" for k, v in from_file["env"].items()]
        options.update(from_file)
    options.update({key: value for key, value in given.items() if value is not None and value != []})
    if isinstance(options["cmd"], str):
        try:
            options["cmd"] = shlex.split(options["cmd"])
        except ValueError as exc:
            fail(f"--cmd: {exc}")
    if options["context"] is None:
        fail("give the context directory (or --spec FILE, whose directory is the default)")
    return options


def _dry_run(ctx: typer.Context, options: dict[str, Any], as_json: bool) -> None:
    result = _call(ctx, "job.plan", _submit_params(ctx, options, upload=False))
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    from .render import explain_table, print_table  # noqa: PLC0415

    typer.echo(f"dry run: nothing written; {result['note']}")
    print_table(explain_table(result["nodes"]))


def _submit_params(
    ctx: typer.Context, options: dict[str, Any], *, upload: bool, as_json: bool = False
) -> dict[str, Any]:
    """job.submit's params; with upload, the context and inputs go into the daemon's store,
    without, only their digests are computed here (a dry run writes nothing)."""
    from metrics_agent.units import UnitError, parse_duration  # noqa: PLC0415

    context_dir, inputs = Path(options["context"]), [Path(p) for p in options["input"]]
    durations = {}
    for key in ("timeout", "retry_delay", "queue_timeout"):
        try:
            if options[key] is not None:
                durations[key] = int(parse_duration(options[key]) * 1000)
        except UnitError as exc:
            fail(f"--{key.replace('_', '-')}: {exc}")
    if not context_dir.is_dir():
        fail(f"context {context_dir} is not a directory")
    for item in inputs:
        if not item.is_file():
            fail(f"input {item} is not a file")
    env = {}
    for pair in options["env"]:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--env: {pair!r} is not K=V")
        env[key] = value
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
    store = (lambda path: _upload(ctx, path, as_json)) if upload else file_digest
    with tempfile.TemporaryDirectory(prefix="form-submit-") as tmp:
        tar = Path(tmp) / "context.tar"
        try:
            _, size = pack_context(context_dir, tar)
        except (ArchiveError, OSError) as exc:
            fail(f"context {context_dir}: {exc}")
        if size > max_context:
            fail(f"context {context_dir} packs to {size:,} bytes, over the node's {max_context:,}-byte limit")
        context_digest = store(tar)
    return {
        "kind": options["kind"],
        "context": context_digest,
        "containerfile": options["file"],
        "image": options["image"],
        "pull": options["pull"],
        "tag": options["tag"],
        "command": options["cmd"] or [],
        "module": options["module"],
        "inputs": [[item.name, store(item)] for item in inputs],
        "requirements": {
            "cpu": None if options["cpu"] is None else str(options["cpu"]),
            "memory": options["memory"],
            "disk": options["disk"],
            "gpu": options["gpu"],
            "gpu_model": options["gpu_model"],
            "gpu_memory": options["gpu_memory"],
            "labels": options["label"],
            "prefer": options["prefer"],
            "select": options["select"],
            "capabilities": options["capability"],
            "region": options["region"],
        },
        "timeout_ms": durations["timeout"],
        "retries": options["retries"],
        "retry_delay_ms": durations["retry_delay"] if options["retries"] else 0,
        "queue_timeout_ms": durations.get("queue_timeout"),
        "env": env,
        "network": options["network"],
        "replicas": options["replicas"],
        "prefer_local_inputs": options["prefer_local_inputs"],
        "datasets": options["dataset"],
        "placement_key": options["placement_key"],
        "shards": options["shards"],
        "split_inputs": options["split_inputs"],
    }


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
    for shard in result.get("shards", []):
        typer.echo(
            f"shard {shard['index']}: {shard['state']} on {(shard['node'] or '-')[:12]} ({shard['id']})"
        )


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
    if result.get("placement_key") is not None:
        prefer += f"  placement-key {result['placement_key']!r}"
    typer.echo(
        f"job {result['id']}  policy {result['policy']}{prefer}  state {result['state']}: {result['reason']}"
    )
    print_table(explain_table(result["nodes"]))


def _download(ctx: typer.Context, digest: str, dest: Path, as_json: bool = False) -> None:
    target = ctx.obj["socket"]
    if isinstance(target, RemoteTarget):
        from . import remote_blobs  # noqa: PLC0415 - httpx: only for --remote

        _remote(remote_blobs.download, target, digest, dest, as_json=as_json)
        return
    try:
        blobs.download(target, digest, dest)
    except (ClientError, OSError) as exc:
        fail(str(exc))


def _stored_log(ctx: typer.Context, job: str, offset: int) -> tuple[dict, Any]:
    """job.log; from the local formd, a stored log comes as an open file (else None)."""
    target = ctx.obj["socket"]
    if isinstance(target, RemoteTarget):
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
    shard: Optional[int] = typer.Option(None, "--shard", help="of a sharded job: this shard's log"),
) -> None:
    """The job's log (stdout and stderr): live from the runner, or stored once it ended."""
    _stream_log(ctx, _shard_job(ctx, job, shard), follow)


def _shard_job(ctx: typer.Context, job: str, shard: int | None) -> str:
    """The job id to read: JOB itself, or with --shard the id of that shard of JOB."""
    status = _call(ctx, "job.status", {"job": job})
    shards = status.get("shards")
    if shard is None:
        if shards:
            fail(f"job {job} has {len(shards)} shards: give --shard 0..{len(shards) - 1}")
        return job
    if not shards:
        fail(f"job {job} is not sharded (no --shard)")
    if not 0 <= shard < len(shards):
        fail(f"--shard: {shard} is outside 0..{len(shards) - 1}")
    return shards[shard]["id"]


def result(
    ctx: typer.Context,
    job: str = typer.Argument(...),
    output: Path = typer.Option(..., "-o", "--output"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fetch the outputs into DIR (outputs.tar is unpacked; image archives are saved as files);
    a sharded job's into DIR/shard-<i>/."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"{output} exists and is not an empty directory")
    shards = _call(ctx, "job.status", {"job": job}).get("shards")
    parts = [(s["id"], output / f"shard-{s['index']}") for s in shards] if shards else [(job, output)]
    written = []
    for part, directory in parts:
        written += _fetch_outputs(ctx, part, directory, as_json)
    typer.echo(
        json.dumps(written, indent=2) if as_json else f"fetched {len(written)} output(s) into {output}"
    )


def _fetch_outputs(ctx: typer.Context, job: str, output: Path, as_json: bool) -> list[dict]:
    files = _call(ctx, "job.files", {"job": job, "which": "outputs"})
    output.mkdir(parents=True, exist_ok=True)
    local = not isinstance(ctx.obj["socket"], RemoteTarget)
    # Unpacked next to DIR's entries, so moving them in is a rename on the same filesystem.
    with tempfile.TemporaryDirectory(prefix=".form-result-", dir=output) as tmp:
        for item in files:
            if item["name"] != "outputs.tar":
                _download(ctx, item["digest"], output / item["name"], as_json)
                continue
            try:
                if local:  # unpacked straight from formd's stored copy, its digest checked first
                    description = f"download {item['name']}"
                    with transfer_bar(description, item["size"], as_json=as_json) as advance:
                        with blobs.open_blob(ctx.obj["socket"], item["digest"]) as stored:
                            blobs.check_digest(stored, item["digest"])
                            extract_archive(stored, Path(tmp) / "outputs", limit_bytes=1 << 40)
                        advance(item["size"])
                else:
                    tar = Path(tmp) / item["name"]
                    _download(ctx, item["digest"], tar, as_json)
                    extract_archive(tar, Path(tmp) / "outputs", limit_bytes=1 << 40)
            except (ClientError, ArchiveError, OSError) as exc:
                fail(f"outputs: {exc}")
            for entry in (Path(tmp) / "outputs").iterdir():
                entry.rename(output / entry.name)
    return files


def register(app: typer.Typer) -> None:
    for command in (submit, jobs, cancel, explain, logs, result):
        app.command(command.__name__)(command)
