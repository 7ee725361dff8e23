"""Small ONNX convolution graphs built in code: the regression check's fixed reference
workload, and stand-in models for tests (no torch, no training needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract

OPSET = 17


def conv_stack(
    channels: int = 16,
    layers: int = 4,
    kernel: int = 3,
    seed: int = 0,
    contract: ModelContract | None = None,
) -> onnx.ModelProto:
    """``layers`` 3x3 convolutions 1 -> C -> ... -> C -> 1 with ReLU, plus a residual add.

    Input ``image`` and output ``enhanced`` are float32 [N, 1, H, W] with dynamic N/H/W, and
    the graph carries ``contract`` (default: a CT fp32 contract) in its metadata, so the
    runtime opens it like an exported student.
    """
    if layers < 2:
        raise ValueError("conv_stack needs at least 2 layers")
    rng = np.random.default_rng(seed)
    widths = [1] + [channels] * (layers - 1) + [1]
    nodes, initializers = [], []
    current = INPUT_NAME
    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        weight = rng.standard_normal((c_out, c_in, kernel, kernel)).astype(np.float32)
        weight *= np.sqrt(2.0 / (c_in * kernel * kernel)) * (0.1 if index == layers - 1 else 1.0)
        bias = np.zeros(c_out, dtype=np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{index}"), numpy_helper.from_array(bias, f"b{index}")]
        out = f"conv{index}"
        nodes.append(helper.make_node("Conv", [current, f"w{index}", f"b{index}"], [out],
                                      pads=[kernel // 2] * 4, name=f"Conv{index}"))
        if index < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{index}"], name=f"Relu{index}"))
            out = f"relu{index}"
        current = out
    nodes.append(helper.make_node("Add", [INPUT_NAME, current], [OUTPUT_NAME], name="Residual"))
    shape = ["N", 1, "H", "W"]
    graph = helper.make_graph(
        nodes, "conv_stack",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="medclear-benchmarks")
    model.ir_version = 8
    contract = contract or ModelContract(size_multiple=1, model_name=f"conv_stack_c{channels}_l{layers}")
    helper.set_model_props(model, contract.to_metadata())
    onnx.checker.check_model(model)
    return model


def save_conv_stack(path: str | Path, **kwargs) -> Path:
    """Build :func:`conv_stack` and save it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(conv_stack(**kwargs), str(path))
    return path
