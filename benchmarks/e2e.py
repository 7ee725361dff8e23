"""DICOM end to end in one process: read -> enhance -> write, the CLI's steps for one file
through the runtime's inference path (``runtime.pipeline.enhance_dataset``), each stage timed
by a stopwatch passed in (read, prepare, infer, restore, write).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.inputs import DicomInput
from benchmarks.timing import Stopwatch, timed_runs
from runtime.backends import Backend, BackendError
from runtime.derived import Derivation, derive
from runtime.dicom_io import DEFAULT_MAX_PIXELS, check_image, decode, read_dataset
from runtime.outputs import write_dicom
from runtime.pipeline import enhance_dataset, open_model, tile_plan
from runtime.tiling import TilePlan

STAGES = ("read", "prepare", "infer", "restore", "write")


def enhance_file_timed(path: Path, target: Path, backend: Backend, plan: TilePlan, derivation: Derivation,
                       watch: Stopwatch) -> None:
    """One DICOM file read, enhanced and written as a derived instance, its stages on ``watch``."""
    with watch("read"):
        ds = read_dataset(path)
        check_image(ds, DEFAULT_MAX_PIXELS)
        decode(ds)
    result = enhance_dataset(backend, ds, plan=plan, stopwatch=watch)
    with watch("restore"):
        stored = result.stored()
    with watch("write"):
        write_dicom(target, derive(ds, stored, result.prepared.encoding, derivation))


def time_dicom_enhance(model: str, case: DicomInput, threads: int, workdir: Path, *,
                       budget_s: float = 3.0, runs: int = 20, min_runs: int = 3, warmup: int = 1) -> dict:
    """Median read -> enhance -> write seconds for ``case`` with ``model`` (ONNX Runtime), and stages."""
    record = {"model": Path(model).name, "input": case.label, "input_key": case.key,
              "rows": case.rows, "columns": case.columns, "threads": threads}
    try:
        backend = open_model(model, "onnxruntime", threads=threads)
    except BackendError as error:
        return {**record, "p50_s": None, "error": str(error)}
    with backend:
        plan = tile_plan(backend, batch=1)  # the CLI's tiling, scaled for super-resolution models
        derivation = Derivation(description="medclear benchmark", software_version="medclear benchmark",
                                model_name=backend.contract.model_name, model_id="benchmark",
                                scale=backend.contract.scale)
        target = workdir / "out" / f"{case.key}.enhanced.dcm"

        def one_run() -> dict[str, float]:
            watch = Stopwatch()
            enhance_file_timed(case.path, target, backend, plan, derivation, watch)
            return watch.times

        samples = timed_runs(one_run, warmup=warmup, runs=runs, budget_s=budget_s, min_runs=min_runs)
    totals = np.array([s["total"] for s in samples])
    stages = {name: float(np.median([s.get(name, 0.0) for s in samples]) * 1e3) for name in STAGES}
    return {**record, "runs": len(samples), "p50_s": float(np.median(totals)),
            "p95_s": float(np.percentile(totals, 95)), "stages_p50_ms": stages, "error": None,
            "pipeline": "runtime.pipeline.enhance_dataset (tile 1024, batch 1, output DICOM)"}
