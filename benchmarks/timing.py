"""Timing loops with warm-up and a time budget, and their summary statistics."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

StageTimes = dict[str, float]  # stage name -> seconds for one run


def timed_runs(
    run: Callable[[], StageTimes],
    warmup: int = 2,
    runs: int = 50,
    budget_s: float = 5.0,
    min_runs: int = 3,
) -> list[StageTimes]:
    """Call ``run`` ``warmup`` times untimed, then up to ``runs`` times or until ``budget_s``.

    ``run`` returns its own per-stage seconds (it knows where its stages begin and end);
    a ``total`` stage is added from the wall clock around the call. At least ``min_runs``
    timed runs are made even past the budget, so percentiles always have samples. A slow
    configuration (one warm-up run over half the budget) gets a single warm-up run.
    """
    for _ in range(max(0, warmup)):
        begin = time.perf_counter()
        run()
        if time.perf_counter() - begin > budget_s / 2:
            break
    samples: list[StageTimes] = []
    started = time.perf_counter()
    while len(samples) < runs:
        begin = time.perf_counter()
        stages = dict(run())
        stages["total"] = time.perf_counter() - begin
        samples.append(stages)
        if len(samples) >= min_runs and time.perf_counter() - started >= budget_s:
            break
    return samples


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99, mean and min of ``values`` (seconds in, milliseconds out)."""
    data = np.asarray(values, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(data, 50)),
        "p95_ms": float(np.percentile(data, 95)),
        "p99_ms": float(np.percentile(data, 99)),
        "mean_ms": float(data.mean()),
        "min_ms": float(data.min()),
    }


def summarize(samples: list[StageTimes]) -> dict[str, dict[str, float]]:
    """Per-stage percentiles over the runs; a stage absent from a run is not averaged in."""
    stages = sorted({name for sample in samples for name in sample})
    return {name: percentiles([s[name] for s in samples if name in s]) for name in stages}


class Stopwatch:
    """Accumulates named stage times: ``with watch("compute"): ...``."""

    def __init__(self) -> None:
        self.times: StageTimes = {}
        self._name = ""
        self._begin = 0.0

    def __call__(self, name: str) -> "Stopwatch":
        self._name = name
        return self

    def __enter__(self) -> "Stopwatch":
        self._begin = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.times[self._name] = self.times.get(self._name, 0.0) + time.perf_counter() - self._begin
