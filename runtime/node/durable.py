"""The flushes and writes that the spool and the journal make durable things with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def fsync_dir(folder: Path) -> None:
    """Make a rename, a new entry or an unlink in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def datasync(descriptor: int) -> None:
    """Make a file's data (and its size) durable: fdatasync where there is one, else fsync."""
    getattr(os, "fdatasync", os.fsync)(descriptor)


def write_all(descriptor: int, data: bytes | memoryview) -> None:
    """``os.write`` until all of ``data`` is written."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(descriptor, view):]


def pwrite_all(descriptor: int, parts: Sequence[bytes | memoryview], offset: int) -> int:
    """Write ``parts`` one after the other at ``offset`` (one pwritev while the kernel takes it
    all); the number of bytes written."""
    views = [memoryview(part).cast("B") for part in parts]
    views = [view for view in views if view.nbytes]
    total = 0
    while views:
        done = os.pwritev(descriptor, views, offset + total)
        if not done:
            raise OSError("pwritev wrote nothing")
        total += done
        while views and done >= views[0].nbytes:
            done -= views[0].nbytes
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]
    return total
