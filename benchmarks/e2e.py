"""DICOM end to end in one process: read -> enhance -> write through the runtime's own
``runtime.enhance.enhance_file``, with its stages timed by wrapping the functions it calls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.inputs import DicomInput
from benchmarks.timing import timed_runs
from runtime import enhance
from runtime.backends import BackendError, select_backend
from runtime.derived import Derivation
from runtime.inputs import Job
from runtime.tiling import TilePlan

# runtime.enhance's module-level names -> the stage their time is counted in
STAGES = {
    "read_dataset": "read", "check_image": "read", "decode": "read",
    "prepare": "prepare", "enhance_frames": "infer", "restore": "restore",
    "derive": "write", "write_dicom": "write",
}


def _timed(function: Callable, stage: str, times: dict[str, float]) -> Callable:
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times[stage] = times.get(stage, 0.0) + time.perf_counter() - begin
    return wrapper


@contextlib.contextmanager
def stage_timers(times: dict[str, float]) -> Iterator[None]:
    """Within the block, ``runtime.enhance``'s pipeline functions add their seconds to ``times``."""
    with contextlib.ExitStack() as stack:
        for name, stage in STAGES.items():
            stack.enter_context(mock.patch.object(enhance, name, _timed(getattr(enhance, name), stage, times)))
        yield


def time_dicom_enhance(model: str, case: DicomInput, threads: int, workdir: Path, *,
                       budget_s: float = 3.0, runs: int = 20, min_runs: int = 3, warmup: int = 1) -> dict:
    """Median read -> enhance -> write seconds for ``case`` with ``model`` (ONNX Runtime), and stages."""
    record = {"model": Path(model).name, "input": case.label, "input_key": case.key,
              "rows": case.rows, "columns": case.columns, "threads": threads}
    try:
        backend = select_backend(model, backend="onnxruntime", threads=threads).open()
    except BackendError as error:
        return {**record, "p50_s": None, "error": str(error)}
    with backend:
        limits = backend.constraints
        settings = enhance.Settings(outdir=workdir / "out", overwrite=True,
                                    plan=TilePlan(size_multiple=limits.size_multiple, min_side=limits.min_side))
        derivation = Derivation(description="medclear benchmark", software_version=enhance.SOFTWARE_VERSION,
                                model_name=backend.contract.model_name, model_id="benchmark")
        job = Job(source=case.path, relative=Path(case.key))

        def one_run() -> dict[str, float]:
            times: dict[str, float] = {}
            with stage_timers(times):
                enhance.enhance_file(job, backend, settings, derivation)
            return times

        samples = timed_runs(one_run, warmup=warmup, runs=runs, budget_s=budget_s, min_runs=min_runs)
    totals = np.array([s["total"] for s in samples])
    stages = {name: float(np.median([s.get(name, 0.0) for s in samples]) * 1e3)
              for name in ("read", "prepare", "infer", "restore", "write")}
    return {**record, "runs": len(samples), "p50_s": float(np.median(totals)),
            "p95_s": float(np.percentile(totals, 95)), "stages_p50_ms": stages, "error": None,
            "pipeline": "runtime.enhance.enhance_file (tile 1024, batch 1, output DICOM)"}
