"""Post-training INT8 for models trained without QAT.

Calibration images come from the user's DICOM folder through the runtime's own preparation
(the model contract's normalization), cropped or padded to the model's size multiple; a
``noise_map`` model's batches carry each image's noise level as their second channel, as the
runtime feeds it. The
result is an explicit-quantization ONNX (QuantizeLinear/DequantizeLinear, int8, symmetric so
every zero point is 0, per-channel weights, opset 17) that ONNX Runtime runs on a CPU and
TensorRT 8.5-11 builds. Optionally (TensorRT <= 10 only) a TensorRT calibration cache for
implicit quantization is written with an IInt8EntropyCalibrator2.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from compiler.errors import CompilerError
from compiler.onnx_io import check_int8, load_model, metadata, qdq_summary, read_contract, save_model, set_metadata
from compiler.trt_gate import trt_api
from compiler.samples import dicom_files, fit_to_multiple, fit_to_shape, prepared_frames
from runtime.model_contract import INPUT_NAME, ModelContract
from runtime.outputs import staged

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
QUANTIZED_OPS = ("Conv", "ConvTranspose")
DEFAULT_MAX_IMAGES = 64
DEFAULT_MAX_SIDE = 512


@dataclass
class CalibrationResult:
    """The INT8 ONNX written and what went into it."""

    path: Path
    images: int
    quantize_nodes: int
    dequantize_nodes: int
    per_channel_weights: int


class _Batches(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator one model input ``[1, C, H, W]`` per batch."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def calibration_batches(
    data: str | Path, contract: ModelContract, max_images: int, max_side: int, same_shape: bool = False
) -> list[np.ndarray]:
    """Up to ``max_images`` prepared frames from ``data``, each fitted to the size multiple, as
    model inputs ``[1, C, H, W]``; ``same_shape``: all center-cropped to the smallest one's
    rows and columns (ONNX Runtime's histogram calibrators stack every batch's activations)."""
    frames = prepared_frames(dicom_files(data), contract, max_images)
    images = [fit_to_multiple(frame.image, contract.size_multiple, max_side) for frame in frames]
    if same_shape and images:
        height, width = min(image.shape[0] for image in images), min(image.shape[1] for image in images)
        images = [fit_to_shape(image, height, width) for image in images]
    return [frame.batch(image) for frame, image in zip(frames, images)]


def keep_float_paths(model: onnx.ModelProto) -> int:
    """Let float consumers (residual Add, Concat, Resize) read activations unquantized.

    ONNX Runtime shares one Q/DQ pair between all consumers of a tensor, so the residual skip
    would carry the 8-bit input image to the output. Only the quantized ops keep reading the
    DequantizeLinear output; returns the number of rewired inputs.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    weights = {init.name for init in model.graph.initializer}
    rewired = 0
    for dq in model.graph.node:
        quant = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if quant is None or quant.op_type != "QuantizeLinear" or quant.input[0] in weights:
            continue
        for consumer in model.graph.node:
            if consumer.op_type in QUANTIZED_OPS or consumer.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            for index, name in enumerate(consumer.input):
                if name == dq.output[0]:
                    consumer.input[index] = quant.input[0]
                    rewired += 1
    return rewired


def check_int8_onnx(path: Path) -> CalibrationResult:
    """Verify an INT8 ONNX file (see :func:`compiler.onnx_io.check_int8`)."""
    summary = check_int8(load_model(path), str(path))
    return CalibrationResult(path, 0, summary.quantize, summary.dequantize, summary.per_channel_weights)


def quantize(
    fp32_onnx: str | Path,
    data: str | Path,
    out: str | Path,
    method: str = "minmax",
    max_images: int = DEFAULT_MAX_IMAGES,
    max_side: int = DEFAULT_MAX_SIDE,
) -> CalibrationResult:
    """Calibrate ``fp32_onnx`` on the DICOM images under ``data`` and write the Q/DQ ``out``."""
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    model = load_model(fp32_onnx)
    contract = read_contract(model, source=str(fp32_onnx))
    if qdq_summary(model).is_quantized:
        raise CompilerError(f"{fp32_onnx}: already quantized; calibrate the fp32 export")
    if method not in METHODS:
        raise CompilerError(f"--method must be one of {', '.join(METHODS)}")
    batches = calibration_batches(data, contract, max_images, max_side, same_shape=method != "minmax")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "int8.onnx"
        quantize_static(
            str(fp32_onnx),
            str(raw),
            _Batches(batches),
            quant_format=QuantFormat.QDQ,
            # Like the QAT scheme (docs/QUANTIZATION.md): only convolutions run in INT8; the
            # residual Add, Concat and Resize stay in float so the skip path keeps precision.
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
            # Bias stays float: TensorRT 8.x parses only int8 Q/DQ, not int32 bias DQ.
            # For TensorRT 8.x: float weights with a Q/DQ pair (its parser takes no int8
            # initializer into DequantizeLinear) and one Q/DQ pair per consumer. Conv outputs
            # stay float until the next conv quantizes its input.
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "AddQDQPairToWeight": True,
                "DedicatedQDQPair": True,
                "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
            },
        )
        quantized = load_model(raw)
    keep_float_paths(quantized)
    contract.precision = "int8"
    set_metadata(quantized, {**metadata(model), **contract.to_metadata()})
    with staged(out) as staging:  # a file that fails its check never replaces a good one
        save_model(quantized, staging)
        result = check_int8_onnx(staging)
    result.path, result.images = out, len(batches)
    return result


@trt_api(since="8.5", before="11")
def write_trt_cache(
    fp32_onnx: str | Path,
    data: str | Path,
    cache: str | Path,
    max_images: int = DEFAULT_MAX_IMAGES,
    shape: tuple[int, int] = (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE),
) -> Path:
    """TensorRT <= 10 implicit INT8: calibrate with an IInt8EntropyCalibrator2 and save its cache.

    Needs TensorRT and a GPU (CompilerError otherwise); TensorRT 11 has no calibrators.
    """
    from compiler.build import BuildOptions, build_serialized
    from compiler.trt_gate import import_tensorrt, require

    fp32_onnx, cache = Path(fp32_onnx), Path(cache)
    contract = read_contract(load_model(fp32_onnx), source=str(fp32_onnx))
    trt = import_tensorrt()
    require(trt.__version__, write_trt_cache, "a TensorRT calibration cache (TensorRT 11 has no calibrators)")
    from polygraphy.backend.trt import Calibrator

    height, width = (s - s % contract.size_multiple for s in shape)
    frames = prepared_frames(dicom_files(data), contract, max_images)
    batches = [{INPUT_NAME: f.batch(fit_to_shape(f.image, height, width))} for f in frames]
    cache.unlink(missing_ok=True)  # Polygraphy's Calibrator would read an old cache instead of calibrating
    calibrator = Calibrator(batches, cache=str(cache), BaseClass=trt.IInt8EntropyCalibrator2)
    options = BuildOptions(fp32_onnx, cache.with_suffix(".engine"), "int8", (1, contract.input_channels, height, width))
    build_serialized(trt, options, fp32_onnx, calibrator)
    if not cache.is_file():
        raise CompilerError(f"{cache}: TensorRT wrote no calibration cache")
    return cache
