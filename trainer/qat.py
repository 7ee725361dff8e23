"""Quantization-aware training with NVIDIA ModelOpt (``modelopt.torch.quantization``).

Scheme (TensorRT explicit quantization): INT8 weights per output channel (axis 0),
symmetric; INT8 activations (the input of every Conv) per tensor, symmetric; zero point 0;
max calibration. ``torch.onnx.export(..., opset_version=17, dynamo=False)`` of a quantized
model writes QuantizeLinear/DequantizeLinear pairs. See docs/QUANTIZATION.md.

modelopt is imported lazily: it takes seconds to import and only QAT needs it.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from trainer.distill import check_ensemble_size

METHOD = "modelopt"


@dataclass
class QATConfig:
    """QAT settings (plain data)."""

    calib_batches: int = 16
    # fnmatch patterns of module names left in float (e.g. ["head.*", "tail"]); empty = all convs.
    skip_modules: list[str] = field(default_factory=list)
    # > 0: add this weight times the L1 distance between the quantized model's output and the
    # frozen float student's output on the same input (the float student distils into its own QAT).
    float_kd: float = 0.0
    # The float student's output for float_kd averaged over this many flips/transposes of the
    # input (trainer.distill.ensembled_output; 1 = one plain pass): a self-ensemble target.
    float_kd_ensemble: int = 1

    def __post_init__(self) -> None:
        check_ensemble_size(self.float_kd_ensemble, "qat.float_kd_ensemble")


def quant_config(skip_modules: Iterable[str] = ()) -> dict:
    """The ModelOpt quantization config of the scheme above."""
    entries: list[dict] = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
        # ConvTranspose weights are [C_in, C_out, kH, kW]: output channels are axis 1 (TensorRT's K).
        {"quantizer_name": "*weight_quantizer", "parent_class": "nn.ConvTranspose2d", "cfg": {"num_bits": 8, "axis": 1}},
    ]
    entries += [{"quantizer_name": f"{pattern}*", "enable": False} for pattern in skip_modules]
    return {"quant_cfg": entries, "algorithm": "max"}


def quantize(
    model: nn.Module, calibration: Callable[[nn.Module], None], skip_modules: Iterable[str] = ()
) -> nn.Module:
    """Insert quantizers into ``model`` (in place) and calibrate them by running ``calibration(model)``."""
    import modelopt.torch.quantization as mtq

    was_training = model.training
    model.eval()
    # ModelOpt prints progress to stdout; keep stdout for the CLI's JSON result.
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        model = mtq.quantize(model, quant_config(skip_modules), forward_loop=calibration)
    model.train(was_training)
    return model


def quantization_info(model: nn.Module, skip_modules: Iterable[str] = ()) -> dict:
    """Plain-data description of the scheme plus the ModelOpt state needed to rebuild it."""
    import modelopt
    import modelopt.torch.opt as mto

    return {
        "method": METHOD,
        "weights": "int8 per-channel symmetric (axis 0)",
        "activations": "int8 per-tensor symmetric",
        "zero_point": 0,
        "calibration": "max",
        "skip_modules": list(skip_modules),
        "modelopt_version": modelopt.__version__,
        "modelopt_state": mto.modelopt_state(model),
    }


def restore_quantized(model: nn.Module, info: dict) -> nn.Module:
    """Re-insert the quantizers described by ``info`` into a fresh float ``model``.

    The amax values are buffers in the state dict; load it afterwards.
    """
    if info.get("method") != METHOD:
        raise ValueError(f"unknown quantization method {info.get('method')!r} (expected {METHOD!r})")
    import modelopt.torch.opt as mto

    with contextlib.redirect_stdout(sys.stderr):
        return mto.restore_from_modelopt_state(model, info["modelopt_state"])


def is_quantized(model: nn.Module) -> bool:
    """True when ModelOpt quantizers have been inserted into ``model``."""
    return any(type(m).__name__ == "TensorQuantizer" for m in model.modules())
