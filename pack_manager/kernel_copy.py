"""Copying between files without the bytes passing through Python.

copy_file_range keeps a copy inside the kernel (and shares extents where the file system
can); across file systems that refuse it (EXDEV) sendfile does the same; a read and a
write stand in where neither works, and confirm every 0 the kernel calls report, since
/proc and /sys files copy as empty. The blob store copies files in with it, `form result`
unpacks outputs with it, and the outputs tarball is packed with it.
"""

from __future__ import annotations

import errno
import os

FALLBACK_READ = 1024 * 1024  # the most one read-and-write step moves
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def copy_range(src: int, out: int, src_offset: int, out_offset: int, count: int) -> int:
    """Copy up to `count` bytes at `src_offset` of `src` to `out_offset` of `out`; returns
    the bytes copied, 0 at the end of `src`. Neither descriptor's position matters, but
    `out`'s moves to `out_offset` when sendfile is the way."""
    if count <= 0:
        return 0
    try:
        if copied := os.copy_file_range(src, out, count, src_offset, out_offset):
            return copied
    except OSError as error:
        if error.errno not in _NO_KERNEL_COPY:
            raise
        try:
            os.lseek(out, out_offset, os.SEEK_SET)
            if copied := os.sendfile(out, src, src_offset, count):
                return copied
        except OSError as error:
            if error.errno not in _NO_KERNEL_COPY:
                raise
    data = os.pread(src, min(count, FALLBACK_READ), src_offset)
    written = 0
    while written < len(data):
        written += os.pwrite(out, memoryview(data)[written:], out_offset + written)
    return len(data)


def copy_exactly(src: int, out: int, src_offset: int, out_offset: int, count: int) -> None:
    """Copy exactly `count` bytes; EOFError when `src` ends first."""
    done = 0
    while done < count:
        copied = copy_range(src, out, src_offset + done, out_offset + done, count - done)
        if copied == 0:
            raise EOFError(f"source ended after {done:,} of {count:,} bytes")
        done += copied
