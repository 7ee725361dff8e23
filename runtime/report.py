"""What the CLI prints: one line per file on stderr, the summary line on stdout.

Every file name and cause goes through ``runtime.logtext``: one line each, control characters
escaped, so neither a file name nor a library message can add or forge a line.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runtime.logtext import cause, safe

LINE_LIMIT = 600  # characters of cause per line; the codec advice is the longest planned one


def file_line(status: str, source: Path | str, message: str) -> str:
    """``medclear: <status> <file>: <cause>`` as one safe line."""
    return f"medclear: {status} {safe(source)}: {cause(message, LINE_LIMIT)}"


@dataclass
class Tally:
    """Counts and timings for the summary line."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    milliseconds: list[float] = field(default_factory=list)

    def summary(self) -> str:
        median = f"{statistics.median(self.milliseconds):.1f}" if self.milliseconds else "n/a"
        return (
            f"medclear: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"median {median} ms per image"
        )


class Reporter:
    """Per-file lines on stderr (through tqdm so the bar stays intact) and a progress bar."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        disable = quiet or not sys.stderr.isatty()
        self.bar = tqdm(total=total, file=sys.stderr, disable=disable, unit="file", dynamic_ncols=True)

    def file(self, status: str, source: Path | str, message: str) -> None:
        """One line about one file: ``enhanced``, ``skipped`` or ``FAILED``."""
        self._tqdm.write(file_line(status, source, message), file=sys.stderr)

    def step(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
