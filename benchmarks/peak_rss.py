"""``python -m benchmarks.peak_rss OUT.json MODULE [ARGS...]``: run MODULE as ``__main__`` in this
fresh process and write its peak resident memory to OUT.json at exit.

The kernel's ``ru_maxrss`` of a child also counts the memory of the parent it was forked
from (the high-water mark survives exec), so a benchmark parent holding models would inflate
it; ``VmHWM`` in /proc/self/status belongs to this process's own address space only.
"""

from __future__ import annotations

import atexit
import json
import resource
import runpy
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's resident-memory high-water mark in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    """Run the module named on the command line, recording its peak RSS at exit."""
    if len(sys.argv) < 3:
        sys.exit("usage: python -m benchmarks.peak_rss OUT.json MODULE [ARGS...]")
    out, module, *arguments = sys.argv[1:]
    atexit.register(lambda: Path(out).write_text(json.dumps({"peak_rss_bytes": peak_rss_bytes()})))
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
