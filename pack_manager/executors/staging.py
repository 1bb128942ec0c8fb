"""Lay out one job's work area from blobs, refusing bad input before anything runs.

The blob store belongs to the daemon; here it is only a function from a digest to a local
file path (or None when the blob is not held). Every check that can fail on the job's own
input (context archive rules, sizes, the module path) happens here, so a refused job never
reaches Podman or wasmtime.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Callable

from ..context_archive import ArchiveError, check_archive, extract_archive
from ..jobspec import JobSpec, JobSpecError, check_relative_path, is_digest
from .base import ExecutorLimits, WorkArea

BlobLookup = Callable[[str], "Path | None"]


class StagingError(ValueError):
    """The job's input cannot be staged; the message says which part and why."""


def stage_work_area(
    spec: JobSpec, root: Path, result_dir: Path, blob_path: BlobLookup, limits: ExecutorLimits
) -> WorkArea:
    if root.exists() and any(root.iterdir()):
        raise StagingError(f"work area {root} already exists and is not empty")
    try:
        return _stage(spec, root, result_dir, blob_path, limits)
    except OSError as exc:
        remove_tree(root)
        raise StagingError(f"staging: {exc}") from exc
    except BaseException:
        remove_tree(root)
        raise


def _stage(
    spec: JobSpec, root: Path, result_dir: Path, blob_path: BlobLookup, limits: ExecutorLimits
) -> WorkArea:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The container user is not root: it must be able to reach and read the data dirs.
    os.chmod(root, 0o711)
    inputs_dir, outputs_dir, scratch_dir = root / "inputs", root / "outputs", root / "scratch"
    inputs_dir.mkdir(mode=0o755)
    outputs_dir.mkdir()
    os.chmod(outputs_dir, 0o777)
    scratch_dir.mkdir(mode=0o700)
    result_dir.mkdir(parents=True, exist_ok=True)

    context_tar = context_dir = module_path = None
    if spec.context is not None:
        context_tar = _need_blob(blob_path, spec.context, "context")
        try:
            if spec.kind == "build":
                summary = check_archive(context_tar, limits.max_context_bytes)
                if spec.containerfile not in summary.names:
                    raise StagingError(f"context: it has no {spec.containerfile!r} at its top")
            else:
                # Run and wasm jobs see the context at /data/context, their working directory.
                context_dir = scratch_dir / "context"
                extract_archive(context_tar, context_dir, limits.max_context_bytes)
                make_writable_for_all(context_dir)
        except ArchiveError as exc:
            raise StagingError(f"context: {exc}") from exc

    total = 0
    for item in spec.inputs:
        source = _need_blob(blob_path, item.digest, f"input {item.name!r}")
        total += source.stat().st_size
        if total > limits.max_input_bytes:
            raise StagingError(
                f"inputs: together over the limit of {limits.max_input_bytes} bytes at {item.name!r}"
            )
        target = inputs_dir / item.name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)

    if spec.kind == "wasm":
        module_path = _module(spec, blob_path, context_dir)

    return WorkArea(
        root=root,
        inputs_dir=inputs_dir,
        outputs_dir=outputs_dir,
        scratch_dir=scratch_dir,
        result_dir=result_dir,
        context_tar=context_tar,
        context_dir=context_dir,
        module_path=module_path,
    )


def make_writable_for_all(context_dir: Path) -> None:
    """The job's user is not formd's: the context is this run's own copy, and the job may
    write into its working directory (the writes go when the run's work area does)."""
    for directory, _dirs, files in os.walk(context_dir):
        os.chmod(directory, 0o777)
        for name in files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):  # links are left alone: their targets are files of the walk
                os.chmod(path, mode & 0o111 | 0o666)


def _module(spec: JobSpec, blob_path: BlobLookup, context_dir: Path | None) -> Path:
    assert spec.module is not None  # JobSpec guarantees it for wasm jobs
    if is_digest(spec.module):
        return _need_blob(blob_path, spec.module, "module")
    try:
        check_relative_path(spec.module, "module")
    except JobSpecError as exc:
        raise StagingError(str(exc)) from exc
    assert context_dir is not None
    candidate = (context_dir / spec.module).resolve()
    if not candidate.is_relative_to(context_dir.resolve()):
        raise StagingError(f"module: {spec.module!r} leads outside the context")
    if not candidate.is_file():
        raise StagingError(f"module: {spec.module!r} is not a file in the context")
    return candidate


def _need_blob(blob_path: BlobLookup, digest: str, what: str) -> Path:
    path = blob_path(digest)
    if path is None or not path.is_file():
        raise StagingError(f"{what}: blob {digest[:12]} is not in the local store")
    return path


def remove_tree(root: Path) -> None:
    """Remove a work area even when a job left read-only dirs behind in it."""
    if not root.exists():
        return

    def make_writable_and_retry(func, path, _exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
        except OSError:
            pass
        func(path)

    shutil.rmtree(root, onerror=make_writable_and_retry)
