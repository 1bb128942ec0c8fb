"""Turn what a job left in /data/outputs into one deterministic, digested tarball."""

from __future__ import annotations

import trio

from ..context_archive import ArchiveError, pack_directory
from .base import OUTPUTS_TAR, ExecutorLimits, OutputFile, WorkArea


def pack_outputs(work: WorkArea, limits: ExecutorLimits, strict: bool) -> tuple[OutputFile, ...]:
    """Blocking: pack outputs_dir into result_dir/outputs.tar. With strict (a successful job),
    a refused outputs dir (over the size limit, a fifo) raises ArchiveError; otherwise it is
    dropped, since a failed job's outputs are only a courtesy."""
    target = work.result_dir / OUTPUTS_TAR
    try:
        digest, size = pack_directory(work.outputs_dir, target, limits.max_output_bytes)
    except ArchiveError:
        target.unlink(missing_ok=True)
        if strict:
            raise
        return ()
    return (OutputFile(OUTPUTS_TAR, digest, size, target),)


async def collect_outputs(work: WorkArea, limits: ExecutorLimits, strict: bool) -> tuple[OutputFile, ...]:
    """pack_outputs in a worker thread."""
    return await trio.to_thread.run_sync(pack_outputs, work, limits, strict)
