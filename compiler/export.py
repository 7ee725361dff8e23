"""Checkpoint -> ONNX: ``NAME.fp32.onnx``, and ``NAME.int8.onnx`` (Q/DQ) from a QAT checkpoint.

Opset 17 (TensorRT 8.5/8.6 parse it), dynamic N/H/W, the TorchScript exporter (modelopt's
fake quantizers export to QuantizeLinear/DequantizeLinear through it), onnxslim constant
folding, the model contract in ``metadata_props``, and a check of every export against the
PyTorch model with ONNX Runtime on random and real (packaged CT DICOM) inputs. A
super-resolution model (attribute ``scale`` > 1) gets that scale in its contract, dynamic output
axes of its own (``H*2``, ``W*2``) and a check that its output is ``scale`` times the input.
A model with two input channels (attribute ``input_channels`` 2: the image and its noise map)
gets noise conditioning ``noise_map`` in its contract and a two-channel input ``image``; its
checks feed real images with their measured noise level, as the runtime does.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from compiler.errors import CompilerError
from compiler.onnx_io import OPSET, check_int8, cpu_session, save_model, set_metadata, slim
from compiler.samples import (
    SMALL_HELDOUT_BY_MODALITY, fit_to_multiple, packaged_heldout, prepared_frames, random_batch,
)
from runtime.engine_sidecar import sha256_file
from runtime.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelContract,
    conditioning_for_channels,
    task_for_scale,
)
from runtime.normalization import NormalizationSpec
from runtime.outputs import staged

# ONNX Runtime vs PyTorch. fp32: the same float arithmetic up to summation order.
FP32_MAX_ABS = 1e-4
# int8: ORT runs integer kernels (QLinearConv after QDQ fusion) where torch fake-quantizes in
# float, so an activation may land one quantization step apart; a step is about 1/127 of an
# activation's range. Bound all but the worst 0.1 % of pixels by a few steps, the mean well below
# one step, and the worst pixel by a few more: a step flipped in the last quantized activation
# reaches the float output layer (and, through an x2 model's PixelShuffle, four output pixels)
# scaled by its weights, while an export bug (a wrong scale, a lost Q/DQ pair) moves many pixels.
INT8_MAX_ABS = 0.05  # on the 99.9th percentile of |ONNX - PyTorch|
INT8_WORST_ABS = 0.25  # on the maximum (the fine-tuned x2 student: 0.22 at one lung edge of CT_small)
INT8_MEAN_ABS = 2e-3
TRAINING_DATA_MAX_CHARS = 2000
_KEPT_SECTIONS = ("degradation", "modalities")  # kept in the contract when the summary is long


@dataclass
class ExportCheck:
    """Agreement of the ONNX file with the PyTorch model on one input."""

    input_name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    p999_abs: float  # the 99.9th percentile of |ONNX - PyTorch|


@dataclass
class ExportResult:
    """One written ONNX file and how well it matched PyTorch."""

    path: Path
    precision: str
    checks: list[ExportCheck] = field(default_factory=list)


def training_data_string(summary: dict | None) -> str:
    """A short JSON string of the training-data summary (scalar fields only if it is long)."""
    if not summary:
        return "unknown"
    text = json.dumps(summary, sort_keys=True, default=str)
    if len(text) <= TRAINING_DATA_MAX_CHARS:
        return text
    # Too long with the image names: keep the scalars and what the noise ranges were.
    kept = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or k in _KEPT_SECTIONS}
    text = json.dumps(kept, sort_keys=True, default=str)
    if len(text) <= TRAINING_DATA_MAX_CHARS:
        return text
    scalars = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool))}
    return json.dumps(scalars, sort_keys=True)[:TRAINING_DATA_MAX_CHARS]


def contract_for(model: torch.nn.Module, info: dict, precision: str, checkpoint_sha256: str) -> ModelContract:
    """The model contract from the checkpoint's info and the model's attributes."""
    normalization = {
        key: NormalizationSpec.from_dict(value) for key, value in (info.get("normalization") or {}).items()
    }
    kwargs = {}
    if normalization:
        kwargs["normalization"] = normalization
    if info.get("modalities"):
        kwargs["modalities"] = tuple(info["modalities"])
    scale = model_scale(model)
    return ModelContract(
        task=task_for_scale(scale),
        scale=scale,
        noise_conditioning=conditioning_for_channels(model_input_channels(model)),
        size_multiple=int(getattr(model, "size_multiple", 1)),
        precision=precision,
        model_name=str(getattr(model, "model_name", info.get("model_name", "unknown"))),
        training_data=training_data_string(info.get("data_summary")),
        checkpoint_sha256=checkpoint_sha256,
        **kwargs,
    )


def model_scale(model: torch.nn.Module) -> int:
    """Output rows and columns per input one: the model's ``scale`` attribute (1 if absent)."""
    return int(getattr(model, "scale", 1))


def model_input_channels(model: torch.nn.Module) -> int:
    """Input channels: the model's ``input_channels`` attribute (1 if absent), 1 (the image) or
    2 (the image and its noise map); CompilerError for any other count."""
    channels = int(getattr(model, "input_channels", 1))
    try:
        conditioning_for_channels(channels)
    except ValueError as error:
        raise CompilerError(f"model {getattr(model, 'model_name', '?')}: {error}") from None
    return channels


def is_quantized(info: dict) -> bool:
    """True for a QAT checkpoint (its ``quantization`` entry is set)."""
    return bool(info.get("quantization"))


def _torch_export(model: torch.nn.Module, path: Path, size_multiple: int) -> None:
    dummy = torch.zeros(1, model_input_channels(model), 4 * size_multiple, 4 * size_multiple)
    axes = {0: "N", 2: "H", 3: "W"}
    scale = model_scale(model)
    out_axes = axes if scale == 1 else {0: "N", 2: f"H*{scale}", 3: f"W*{scale}"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: out_axes},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def check_inputs(size_multiple: int, contract: ModelContract) -> list[tuple[str, np.ndarray]]:
    """Random batches of two shapes (N=2, H != W) plus a packaged real slice of a modality the
    contract covers (CT's smallest; else MR's) if present, with the contract's input channels."""
    m, channels = max(1, size_multiple), contract.input_channels
    height, width = m * max(1, 48 // m), m * max(1, 64 // m)
    inputs = [
        ("random", random_batch((2, channels, height, width), seed=0)),
        ("random-small", random_batch((1, channels, m * max(1, 16 // m), m * max(1, 24 // m)), seed=1)),
    ]
    real = packaged_heldout(contract, SMALL_HELDOUT_BY_MODALITY)
    if real:
        frame = prepared_frames(real, contract)[0]
        inputs.append((f"dicom:{real[0].name}", frame.batch(fit_to_multiple(frame.image, m))))
    return inputs


def compare_with_torch(
    model: torch.nn.Module, onnx_path: Path, inputs: list[tuple[str, np.ndarray]], optimization: str = "all"
) -> list[ExportCheck]:
    """Run PyTorch and ONNX Runtime (CPU) on each input and measure the difference; both
    outputs must be one channel, the model's ``scale`` times the input per side."""
    session = cpu_session(onnx_path, optimization)
    scale = model_scale(model)
    checks = []
    for name, batch in inputs:
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        n, _, h, w = batch.shape
        if got.shape != expected.shape or got.shape != (n, 1, h * scale, w * scale):
            raise CompilerError(f"{onnx_path}: output shape {got.shape}, PyTorch {expected.shape}, "
                                f"for input {batch.shape} at scale {scale}")
        diff = np.abs(got.astype(np.float64) - expected)
        checks.append(ExportCheck(name, batch.shape, float(diff.max()), float(diff.mean()),
                                  float(np.quantile(diff, 0.999))))
    return checks


def _enforce(result: ExportResult) -> None:
    for check in result.checks:
        if result.precision == "fp32":
            bad = check.max_abs > FP32_MAX_ABS
            limit = f"max abs <= {FP32_MAX_ABS}"
        else:
            bad = (check.p999_abs > INT8_MAX_ABS or check.max_abs > INT8_WORST_ABS
                   or check.mean_abs > INT8_MEAN_ABS)
            limit = (f"99.9th percentile <= {INT8_MAX_ABS}, max abs <= {INT8_WORST_ABS}, "
                     f"mean abs <= {INT8_MEAN_ABS}")
        if bad:
            raise CompilerError(
                f"{result.path}: ONNX Runtime differs from PyTorch on {check.input_name} "
                f"(max abs {check.max_abs:.3g}, 99.9th percentile {check.p999_abs:.3g}, "
                f"mean abs {check.mean_abs:.3g}; need {limit})"
            )


def export_model(
    model: torch.nn.Module,
    info: dict,
    out_dir: str | Path,
    checkpoint_sha256: str = "",
    name: str | None = None,
) -> ExportResult:
    """Export one in-memory model (fake-quantized if ``info`` says QAT) and check it.

    Writes ``out_dir/NAME.fp32.onnx`` or ``out_dir/NAME.int8.onnx``; NAME defaults to the
    model's registry name.
    """
    model = model.eval()
    precision = "int8" if is_quantized(info) else "fp32"
    contract = contract_for(model, info, precision, checkpoint_sha256)
    out_path = Path(out_dir) / f"{name or contract.model_name}.{precision}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        _torch_export(model, raw, contract.size_multiple)
        graph = slim(onnx.load(str(raw)))
    if precision == "int8":
        check_int8(graph, f"{out_path} (QAT export)")
    set_metadata(graph, contract.to_metadata())
    result = ExportResult(out_path, precision)
    # INT8 is checked with Q/DQ kept as float ops: the graph's semantics, which is what the
    # fake-quantized PyTorch model computes (fused CPU integer kernels are judged by verify).
    optimization = "basic" if precision == "int8" else "all"
    inputs = check_inputs(contract.size_multiple, contract)
    with staged(out_path) as staging:  # a file that fails its check never replaces a good one
        save_model(graph, staging)
        result.checks = compare_with_torch(model, staging, inputs, optimization)
        _enforce(result)
    return result


def _restrict_modalities(info: dict, modalities: list[str] | None, checkpoint: Path) -> dict:
    """``info`` whose contract covers only ``modalities`` (a subset of what the model trained on):
    the runtime then refuses the others with a clear message instead of enhancing them."""
    if not modalities:
        return info
    trained = [m.upper() for m in info.get("modalities") or []]
    wanted = [m.upper() for m in modalities]
    outside = [m for m in wanted if trained and m not in trained]
    if outside:
        raise CompilerError(f"{checkpoint}: --modalities {', '.join(outside)} not among the trained ones "
                            f"({', '.join(trained)})")
    return {**info, "modalities": wanted}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, name: str | None = None,
                      modalities: list[str] | None = None) -> list[ExportResult]:
    """Export a medclear checkpoint: fp32 always; int8 Q/DQ too for a QAT checkpoint.

    The fp32 file of a QAT checkpoint comes from the same weights with quantizers disabled.
    ``modalities`` restricts the contract to the modalities the model is released for.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CompilerError(f"{checkpoint}: checkpoint not found")
    try:
        from trainer.checkpoint import load_model
    except ImportError as error:
        raise CompilerError(f"trainer.checkpoint is unavailable ({error})") from error
    try:
        model, info = load_model(checkpoint)
    except Exception as error:  # torch/pickle raise many kinds; report the file and cause
        raise CompilerError(f"{checkpoint}: cannot load checkpoint ({error})") from error
    info = _restrict_modalities(info, modalities, checkpoint)
    digest = sha256_file(checkpoint)
    results = []
    if is_quantized(info):
        results.append(export_model(model, info, out_dir, digest, name))
        with _quantizers_disabled(model):
            results.insert(0, export_model(model, {**info, "quantization": None}, out_dir, digest, name))
    else:
        results.append(export_model(model, info, out_dir, digest, name))
    return results


class _quantizers_disabled:
    """Context: modelopt's fake quantizers off (plain float model), restored on exit."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> torch.nn.Module:
        from modelopt.torch.quantization import disable_quantizer, enable_quantizer

        self._enable = enable_quantizer
        disable_quantizer(self.model, "*")
        return self.model

    def __exit__(self, *exc) -> None:
        self._enable(self.model, "*")
