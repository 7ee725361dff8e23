"""Compare a candidate against a reference on the same inputs, both loaded through the runtime.

* ``--engine``: a TensorRT engine against its ONNX under ONNX Runtime (needs TensorRT + GPU).
  The engine is opened by the runtime's TensorRT backend, so its sidecar is checked against
  this machine and the file before it is deserialized, exactly as at the bedside.
* ``--reference``: an ONNX (e.g. INT8 Q/DQ) against another (its fp32 export), both on a CPU.

Inputs are random batches plus real DICOM frames prepared by the runtime. For each input the
maximum and mean absolute error and the PSNR of candidate vs reference (data range 1, the
normalized image range) are reported; the check fails when any PSNR falls below the tolerance.
A super-resolution pair is compared the same way, at the output size (``scale`` times the
input's rows and columns); both must have the same scale. A ``noise_map`` pair gets each real
frame's noise level as the second input channel (random inputs: a constant synthetic level);
both must take the same input channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import CompilerError
from compiler.samples import (
    Frame,
    dicom_files,
    fit_to_multiple,
    fit_to_shape,
    packaged_heldout,
    prepared_frames,
    random_batch,
)
from runtime.backends import Backend, BackendError
from runtime.engine_sidecar import EngineSidecarError, read_sidecar, sha256_file
from runtime.model_contract import ModelContract
from runtime.pipeline import open_model

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


def _real_frames(data: str | Path | None, contract: ModelContract) -> list[tuple[str, Frame]]:
    paths = dicom_files(data) if data is not None else packaged_heldout(contract)
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
    m, channels = contract.size_multiple, contract.input_channels
    inputs = []
    if with_random:
        inputs.append(("random", random_batch((2, channels, m * max(1, 64 // m), m * max(1, 96 // m)), seed)))
    for name, frame in _real_frames(data, contract):
        inputs.append((name, frame.batch(fit_to_multiple(frame.image, m, MAX_SIDE))))
    return inputs


def engine_inputs(
    contract: ModelContract, opt_shape: list[int], data: str | Path | None, seed: int
) -> list[tuple[str, np.ndarray]]:
    """Random and real inputs at the engine profile's opt shape."""
    n, c, h, w = opt_shape
    inputs = [("random", random_batch((n, c, h, w), seed))]
    for name, frame in _real_frames(data, contract):
        inputs.append((name, frame.batch(fit_to_shape(frame.image, h, w), n)))
    return inputs


def open_backend(path: str | Path, backend: str, optimization: str = "all") -> Backend:
    """``path`` opened by the runtime (ONNX Runtime on the CPU, or TensorRT with its sidecar
    checked); CompilerError with the runtime's one-line reason if it cannot be opened."""
    try:
        return open_model(path, backend, cpu_only=True, ort_optimization=optimization)
    except BackendError as error:  # without the runtime's --backend advice: verify has no such option
        raise CompilerError(error.reason) from error


def check_same_task(reference: Backend, candidate: Backend) -> None:
    """CompilerError unless both models have the same scale (outputs of one size) and take the
    same input (noise conditioning)."""
    ref, cand = reference.contract, candidate.contract
    if ref.scale != cand.scale:
        raise CompilerError(f"{candidate.source} has scale {cand.scale} ({cand.task}), {reference.source} scale "
                            f"{ref.scale} ({ref.task}); verify a model against its own export or ONNX")
    if ref.noise_conditioning != cand.noise_conditioning:
        raise CompilerError(f"{candidate.source} is a {cand.noise_conditioning} model, {reference.source} a "
                            f"{ref.noise_conditioning} one; verify a model against its own export or ONNX")


def compare(reference: Backend, candidate: Backend, inputs: list[tuple[str, np.ndarray]]) -> list[InputReport]:
    """Run both models on every input and measure how far the candidate is from the reference."""
    check_same_task(reference, candidate)
    reports = []
    for name, batch in inputs:
        try:
            ref_out, cand_out = reference.infer(batch), candidate.infer(batch)
        except BackendError as error:
            raise CompilerError(f"{name}: {error}") from error
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

    ``optimization`` is the candidate's ONNX Runtime level, ``all`` or ``basic``
    (:func:`runtime.backends.onnxruntime_backend.graph_optimization`).
    """
    with open_backend(candidate, "onnxruntime", optimization) as cand, open_backend(reference, "onnxruntime") as ref:
        precision = cand.contract.precision
        tolerance = tolerance_db if tolerance_db is not None else DEFAULT_TOLERANCE_DB.get(precision, 30.0)
        report = VerifyReport(str(candidate), str(reference), precision, tolerance, optimization)
        with_random = precision == ref.contract.precision
        report.inputs = compare(ref, cand, onnx_inputs(cand.contract, data, seed, with_random))
    return report


def verify_engine(
    engine_path: str | Path,
    onnx_path: str | Path,
    tolerance_db: float | None = None,
    data: str | Path | None = None,
    seed: int = 0,
) -> VerifyReport:
    """A TensorRT engine against its ONNX under ONNX Runtime; needs TensorRT and a GPU.

    The engine is opened by the runtime's TensorRT backend: its sidecar must match this
    machine's TensorRT and GPU and the engine file, or it is refused before deserializing.
    """
    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    try:  # a missing or malformed sidecar is refused below, by the backend, with its own message
        sidecar = read_sidecar(engine_path)
    except EngineSidecarError:
        sidecar = {}
    built_from = sidecar.get("onnx_sha256")
    if built_from and onnx_path.is_file() and built_from != sha256_file(onnx_path):
        raise CompilerError(f"{engine_path} was built from another ONNX file than {onnx_path} (its sidecar's "
                            "onnx_sha256 differs); verify it against the ONNX it was built from")
    # `candidate` is a runtime Backend (TensorRT stays inside it), so this function needs no @trt_api gate.
    with open_backend(onnx_path, "onnxruntime") as reference, open_backend(engine_path, "tensorrt") as candidate:
        sidecar = sidecar or read_sidecar(engine_path)  # the backend accepted it: readable now
        precision = str(sidecar.get("precision", candidate.contract.precision))
        tolerance = tolerance_db if tolerance_db is not None else DEFAULT_TOLERANCE_DB.get(precision, 30.0)
        report = VerifyReport(str(engine_path), str(onnx_path), precision, tolerance, "TensorRT")
        inputs = engine_inputs(candidate.contract, sidecar["profile"]["opt"], data, seed)
        report.inputs = compare(reference, candidate, inputs)
    return report
