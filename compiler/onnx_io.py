"""ONNX files: load/save, the medclear metadata contract, opset and Q/DQ inspection, slimming."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import CompilerError
from runtime.backends.base import BackendError
from runtime.backends.onnxruntime_backend import graph_optimization
from runtime.model_contract import ModelContract, ModelContractError

OPSET = 17
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def ort_level(name: str):
    """ONNX Runtime graph optimization level by name (the runtime backend's mapping).

    ``all`` (ORT's default, what the CPU runtime uses) fuses Q/DQ into integer kernels;
    ``basic`` keeps Q/DQ as float ops, i.e. exact fake-quantization semantics (what
    PyTorch's fake quantizers and TensorRT's int32-accumulating kernels compute).
    """
    try:
        return graph_optimization(name)
    except BackendError as error:
        raise CompilerError(str(error)) from error


def cpu_session(path: str | Path, optimization: str = "all"):
    """An ONNX Runtime CPU session for ``path`` at the named optimization level."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort_level(optimization)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file; CompilerError naming the file if it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise CompilerError(f"{path}: ONNX file not found")
    try:
        return onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError/OSError variants
        raise CompilerError(f"{path}: not a readable ONNX model ({error})") from error


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Check and write ``model`` to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """All ``metadata_props`` as a dict."""
    return {prop.key: prop.value for prop in model.metadata_props}


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (replace) the given ``metadata_props`` keys, keeping other keys."""
    merged = metadata(model)
    merged.update(values)
    del model.metadata_props[:]
    for key in sorted(merged):
        model.metadata_props.add(key=key, value=str(merged[key]))


def read_contract(model: onnx.ModelProto, source: str = "model") -> ModelContract:
    """The model contract stored in ``model``; CompilerError if absent or malformed."""
    try:
        return ModelContract.from_metadata(metadata(model), source=source)
    except ModelContractError as error:
        raise CompilerError(str(error)) from error


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise CompilerError("model imports no default-domain opset")


@dataclass
class QdqSummary:
    """What explicit quantization a graph holds."""

    quantize: int
    dequantize: int
    nonzero_zero_points: list[str]
    per_channel_weights: int  # DequantizeLinear nodes on weights with a vector scale
    zero_point_types: set[str]

    @property
    def is_quantized(self) -> bool:
        """True when the graph holds any Q/DQ node."""
        return self.quantize + self.dequantize > 0


def qdq_summary(model: onnx.ModelProto) -> QdqSummary:
    """Count Q/DQ nodes and check their zero points (symmetric means all zero)."""
    initializers = {init.name: init for init in model.graph.initializer}
    constants = {
        out: node.attribute[0].t
        for node in model.graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
        for out in node.output
    }
    tensors = {**constants, **initializers}
    counts = Counter(node.op_type for node in model.graph.node)
    nonzero: list[str] = []
    types: set[str] = set()
    per_channel = 0
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        if len(node.input) > 2 and node.input[2]:
            zero_point = tensors.get(node.input[2])
            if zero_point is None:
                nonzero.append(f"{node.name or node.output[0]} (non-constant zero point)")
            else:
                types.add(onnx.TensorProto.DataType.Name(zero_point.data_type))
                if np.any(numpy_helper.to_array(zero_point) != 0):
                    nonzero.append(node.name or node.output[0])
        scale = tensors.get(node.input[1])
        if (
            node.op_type == "DequantizeLinear"
            and scale is not None
            and len(scale.dims) == 1
            and scale.dims[0] > 1
        ):
            per_channel += 1
    return QdqSummary(
        counts["QuantizeLinear"], counts["DequantizeLinear"], nonzero, per_channel, types
    )


def slim(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold and simplify with onnxslim, keeping Q/DQ nodes and ``metadata_props``.

    Raises CompilerError if slimming changed the number of Q/DQ nodes (that would change
    the quantization TensorRT sees).
    """
    import onnxslim

    before = qdq_summary(model)
    kept = metadata(model)
    slimmed = onnxslim.slim(model)
    if not isinstance(slimmed, onnx.ModelProto):
        raise CompilerError("onnxslim returned no model")
    after = qdq_summary(slimmed)
    if (before.quantize, before.dequantize) != (after.quantize, after.dequantize):
        raise CompilerError(
            f"onnxslim changed the Q/DQ nodes ({before.quantize}/{before.dequantize} -> "
            f"{after.quantize}/{after.dequantize}); refusing to write a changed quantization"
        )
    set_metadata(slimmed, kept)
    return slimmed


def check_int8(model: onnx.ModelProto, source: str = "model") -> QdqSummary:
    """The Q/DQ summary of an INT8 model; CompilerError unless it is what TensorRT 8.5+ takes.

    Opset 17, Q/DQ nodes present, every zero point int8 and 0 (symmetric), no int8 weight
    initializer feeding DequantizeLinear (TensorRT 8.x wants float weights behind a Q/DQ
    pair), and per-channel weight scales.
    """
    if opset_version(model) != OPSET:
        raise CompilerError(f"{source}: opset {opset_version(model)}, TensorRT 8.5/8.6 need {OPSET}")
    summary = qdq_summary(model)
    if not summary.is_quantized:
        raise CompilerError(f"{source}: no QuantizeLinear/DequantizeLinear nodes")
    if summary.nonzero_zero_points:
        raise CompilerError(f"{source}: non-zero zero points in {summary.nonzero_zero_points[:3]}")
    if summary.zero_point_types - {"INT8"}:
        raise CompilerError(f"{source}: zero points of type {sorted(summary.zero_point_types)}, need INT8")
    initializers = {init.name for init in model.graph.initializer}
    if any(n.op_type == "DequantizeLinear" and n.input[0] in initializers for n in model.graph.node):
        raise CompilerError(f"{source}: int8 weight initializers feed DequantizeLinear; TensorRT 8.x needs Q/DQ pairs")
    if summary.per_channel_weights == 0:
        raise CompilerError(f"{source}: no per-channel weight quantization")
    return summary
