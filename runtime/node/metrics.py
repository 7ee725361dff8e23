"""The node's counters and latency histograms, rendered in Prometheus' text format.

Counters only grow while the process runs (Prometheus handles restarts); gauges (queue depth,
spool size) are read from the spool when scraped.
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable

PREFIX = "medclear_node_"
# Seconds: from 10 ms (a small image enhanced on a GPU) to 10 minutes (a series waiting for a PACS).
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

COUNTERS = {
    "received": "instances received and durably spooled (C-STORE answered Success)",
    "enhanced": "instances enhanced into a derived instance",
    "forwarded": "instances the destination accepted (derived and unchanged originals)",
    "failed": "instances moved to failed/ (enhancement or forwarding gave up)",
    "unsupported": "instances not enhanced: not an image, colour, or a modality the model does not cover",
    "refused": "C-STOREs answered Out of Resources (spool over its limit) or Processing Failure",
    "rejected_associations": "associations rejected by --allow",
    "forward_associations": "associations opened to the destination",
    "forward_retries": "forwarding attempts that failed and will be retried",
}
HISTOGRAMS = {
    "enhance_seconds": "time to enhance one instance (read, model, derived DICOM written)",
    "image_seconds": "per-image latency from receipt to the destination's acceptance",
}


class Histogram:
    """Cumulative buckets, sum and count (Prometheus histogram)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            label = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{le="{label}"}} {running}')
        out += [f"{name}_sum {self.sum:.6f}", f"{name}_count {running}"]
        return out


class Metrics:
    """Thread-safe counters and histograms; ``render`` adds gauges from ``gauges()``."""

    def __init__(self, gauges: Callable[[], dict[str, tuple[float, str]]] | None = None) -> None:
        self._lock = threading.Lock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.histograms = {name: Histogram() for name in HISTOGRAMS}
        self.gauges = gauges or (lambda: {})

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            self.histograms[name].observe(seconds)

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, help_text in COUNTERS.items():
                full = f"{PREFIX}{name}_total"
                lines += [f"# HELP {full} {help_text}", f"# TYPE {full} counter", f"{full} {self.counters[name]}"]
            for name, help_text in HISTOGRAMS.items():
                full = PREFIX + name
                lines += [f"# HELP {full} {help_text}", f"# TYPE {full} histogram", *self.histograms[name].lines(full)]
        for name, (value, help_text) in self.gauges().items():
            full = PREFIX + name
            lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge", f"{full} {value:g}"]
        return "\n".join(lines) + "\n"
