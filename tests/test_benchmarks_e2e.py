"""benchmarks.e2e: the CLI's steps for one DICOM file, timed by a stopwatch passed in (no patching)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom

from benchmarks.e2e import STAGES, enhance_file_timed
from benchmarks.timing import Stopwatch
from runtime import enhance
from runtime.derived import Derivation
from runtime.pipeline import open_model, tile_plan
from runtime_fixtures import make_smoothing_model, pydicom_file


def test_stages_are_timed_and_the_output_is_the_clis(tmp_path: Path) -> None:
    model = make_smoothing_model(tmp_path / "m.onnx")
    source = Path(shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm"))
    target = tmp_path / "bench" / "ct.enhanced.dcm"
    watch = Stopwatch()
    with open_model(model) as backend:
        derivation = Derivation(description="benchmark", software_version="benchmark",
                                model_name=backend.contract.model_name, model_id="benchmark")
        enhance_file_timed(source, target, backend, tile_plan(backend), derivation, watch)
    assert set(watch.times) == set(STAGES) and all(t > 0 for t in watch.times.values())
    assert enhance.main([str(source), "-o", str(tmp_path / "cli"), "--model", str(model), "-q"]) == 0
    assert pydicom.dcmread(target).PixelData == pydicom.dcmread(tmp_path / "cli" / "ct.enhanced.dcm").PixelData


def test_a_super_resolution_model_is_timed_end_to_end_at_twice_the_size(tmp_path: Path) -> None:
    from benchmarks.e2e import time_dicom_enhance
    from benchmarks.inputs import DicomInput
    from onnx_fixtures import write_tiny_sr_onnx

    model = write_tiny_sr_onnx(tmp_path / "sr.fp32.onnx")
    source = Path(shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm"))
    case = DicomInput(key="ct_small", label="CT_small", path=source, rows=128, columns=128)
    result = time_dicom_enhance(str(model), case, 1, tmp_path, budget_s=0.1, runs=2, min_runs=1, warmup=0)
    assert result["error"] is None and result["p50_s"] > 0
    written = pydicom.dcmread(tmp_path / "out" / "ct_small.enhanced.dcm")
    assert (written.Rows, written.Columns) == (256, 256)
