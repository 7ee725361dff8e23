"""Compare a candidate against a reference on the same inputs, with Polygraphy's runners.

* ``--engine``: a TensorRT engine against its ONNX under ONNX Runtime (needs TensorRT + GPU).
* ``--reference``: an ONNX (e.g. INT8 Q/DQ) against another (its fp32 export), both on a CPU.

Inputs are random batches plus real DICOM frames prepared by the runtime. For each input the
maximum and mean absolute error and the PSNR of candidate vs reference (data range 1, the
normalized image range) are reported; the check fails when any PSNR falls below the tolerance.
"""

from __future__ import annotations

import math
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import CompilerError
from compiler.onnx_io import cpu_session, load_model, read_contract
from compiler.samples import (
    HELDOUT_CT,
    dicom_files,
    fit_to_multiple,
    fit_to_shape,
    packaged_ct,
    prepared_frames,
    random_batch,
)
from compiler.trt_gate import import_tensorrt, trt_api
from runtime.engine_sidecar import EngineSidecarError, read_sidecar
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract

# Minimum PSNR (dB, data range 1) of candidate vs reference, by the candidate's precision.
DEFAULT_TOLERANCE_DB = {"fp32": 80.0, "fp16": 50.0, "int8": 30.0}
MAX_REAL_FRAMES = 16  # real inputs read from --data (the first ones, in path order)
MAX_SIDE = 256  # real frames are center-cropped to this for ONNX-vs-ONNX runs (CPU time)


@dataclass
class InputReport:
    """Agreement on one input."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    psnr_db: float


@dataclass
class VerifyReport:
    """All inputs' agreement and the verdict."""

    candidate: str
    reference: str
    precision: str
    tolerance_db: float
    runtime: str = ""
    inputs: list[InputReport] = field(default_factory=list)

    @property
    def min_psnr_db(self) -> float:
        """Worst PSNR over the inputs."""
        return min(item.psnr_db for item in self.inputs)

    @property
    def passed(self) -> bool:
        """True when every input reaches the tolerance."""
        return all(item.psnr_db >= self.tolerance_db for item in self.inputs)

    def lines(self) -> list[str]:
        """Human-readable report."""
        how = f", ONNX Runtime optimization {self.runtime}" if self.runtime else ""
        out = [f"candidate {self.candidate} ({self.precision}{how}) vs reference {self.reference}"]
        for item in self.inputs:
            out.append(
                f"  {item.name:<28} {'x'.join(map(str, item.shape)):<14} max abs {item.max_abs:.3g}"
                f"  mean abs {item.mean_abs:.3g}  PSNR {item.psnr_db:.2f} dB"
            )
        verdict = "PASS" if self.passed else "FAIL"
        out.append(f"{verdict}: min PSNR {self.min_psnr_db:.2f} dB, tolerance {self.tolerance_db:.2f} dB")
        return out


def psnr(candidate: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB; infinite for identical arrays."""
    mse = float(np.mean((candidate.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _real_frames(data: str | Path | None, contract: ModelContract) -> list[tuple[str, np.ndarray]]:
    paths = dicom_files(data) if data is not None else packaged_ct(HELDOUT_CT)
    if not paths:
        return []
    return [(f"dicom#{i}", frame) for i, frame in enumerate(prepared_frames(paths, contract, MAX_REAL_FRAMES))]


def onnx_inputs(
    contract: ModelContract, data: str | Path | None, seed: int, with_random: bool = True
) -> list[tuple[str, np.ndarray]]:
    """Real frames (cropped to at most MAX_SIDE) and, if asked, a random batch, for CPU runs.

    INT8 against fp32 leaves the random batch out: uniform noise lies outside the activation
    ranges calibrated on real images, so it measures clipping, not the deployed accuracy.
    """
    m = contract.size_multiple
    inputs = []
    if with_random:
        inputs.append(("random", random_batch((2, 1, m * max(1, 64 // m), m * max(1, 96 // m)), seed)))
    for name, frame in _real_frames(data, contract):
        inputs.append((name, fit_to_multiple(frame, m, MAX_SIDE)[None, None]))
    return inputs


def engine_inputs(
    contract: ModelContract, opt_shape: list[int], data: str | Path | None, seed: int
) -> list[tuple[str, np.ndarray]]:
    """Random and real inputs at the engine profile's opt shape."""
    n, c, h, w = opt_shape
    inputs = [("random", random_batch((n, c, h, w), seed))]
    for name, frame in _real_frames(data, contract):
        inputs.append((name, np.repeat(fit_to_shape(frame, h, w)[None, None], n, axis=0)))
    return inputs


def _ort_runner(path: Path, name: str, optimization: str = "all"):
    from polygraphy.backend.onnxrt import OnnxrtRunner

    return OnnxrtRunner(partial(cpu_session, path, optimization), name=name)


def compare(reference_runner, candidate_runner, inputs: list[tuple[str, np.ndarray]]) -> list[InputReport]:
    """Run both runners on every input with Polygraphy's Comparator and measure the difference."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING
    feeds = [{INPUT_NAME: batch} for _, batch in inputs]
    results = Comparator.run([reference_runner, candidate_runner], data_loader=feeds)
    outputs = dict(results.items())
    reference = outputs[reference_runner.name]
    candidate = outputs[candidate_runner.name]
    reports = []
    for (name, batch), ref, cand in zip(inputs, reference, candidate):
        ref_out, cand_out = np.asarray(ref[OUTPUT_NAME]), np.asarray(cand[OUTPUT_NAME])
        if ref_out.shape != cand_out.shape:
            raise CompilerError(f"{name}: output shapes differ ({ref_out.shape} vs {cand_out.shape})")
        diff = np.abs(cand_out.astype(np.float64) - ref_out)
        reports.append(
            InputReport(name, batch.shape, float(diff.max()), float(diff.mean()), psnr(cand_out, ref_out))
        )
    return reports


def verify_onnx(
    candidate: str | Path,
    reference: str | Path,
    tolerance_db: float | None = None,
    data: str | Path | None = None,
    seed: int = 0,
    optimization: str = "all",
) -> VerifyReport:
    """An ONNX (typically INT8 Q/DQ) against a reference ONNX, both under ONNX Runtime on a CPU.

    ``optimization`` is the candidate's ONNX Runtime level (see :func:`compiler.onnx_io.ort_level`).
    """
    candidate, reference = Path(candidate), Path(reference)
    contract = read_contract(load_model(candidate), source=str(candidate))
    reference_contract = read_contract(load_model(reference), source=str(reference))
    tolerance = tolerance_db if tolerance_db is not None else DEFAULT_TOLERANCE_DB.get(contract.precision, 30.0)
    report = VerifyReport(str(candidate), str(reference), contract.precision, tolerance, optimization)
    report.inputs = compare(
        _ort_runner(reference, "reference"),
        _ort_runner(candidate, "candidate", optimization),
        onnx_inputs(contract, data, seed, with_random=contract.precision == reference_contract.precision),
    )
    return report


@trt_api(since="8.6")
def host_code_runtime(trt):
    """A runtime allowed to run the lean runtime embedded in a version-compatible plan."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = True
    return runtime


@trt_api()
def verify_engine(
    engine_path: str | Path,
    onnx_path: str | Path,
    tolerance_db: float | None = None,
    data: str | Path | None = None,
    seed: int = 0,
) -> VerifyReport:
    """A TensorRT engine against its ONNX under ONNX Runtime; needs TensorRT and a GPU."""
    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    if not engine_path.is_file():
        raise CompilerError(f"{engine_path}: engine not found")
    contract = read_contract(load_model(onnx_path), source=str(onnx_path))
    try:
        sidecar = read_sidecar(engine_path)
    except EngineSidecarError as error:
        raise CompilerError(str(error)) from error
    trt = import_tensorrt()
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    precision = str(sidecar.get("precision", "fp16"))
    tolerance = tolerance_db if tolerance_db is not None else DEFAULT_TOLERANCE_DB.get(precision, 30.0)
    report = VerifyReport(str(engine_path), str(onnx_path), precision, tolerance, "TensorRT")
    runtime = host_code_runtime(trt) if sidecar.get("version_compatible") else None
    runner = TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path)), runtime=runtime), name="candidate")
    report.inputs = compare(
        _ort_runner(onnx_path, "reference"),
        runner,
        engine_inputs(contract, sidecar["profile"]["opt"], data, seed),
    )
    return report
