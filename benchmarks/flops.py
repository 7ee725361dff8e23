"""Counted model FLOPs and the machine's float32 matrix-multiply ceiling.

FLOPs of an ONNX graph are counted from its Conv/ConvTranspose nodes: 2 per multiply-add, as
trainer.models.count_flops counts a torch model; bias and element-wise ops are ignored (a few
percent of a convolutional network).
The ceiling is numpy's float32 matmul GFLOP/s, measured in a subprocess so that its BLAS
uses exactly the requested thread count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from runtime.model_contract import INPUT_NAME

COUNTED_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")


def _fixed_input(model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph input ``image`` has the concrete ``shape``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for graph_input in fixed.graph.input:
        if graph_input.name == INPUT_NAME or len(fixed.graph.input) == 1:
            dims = graph_input.type.tensor_type.shape.dim
            for dim, value in zip(dims, shape):
                dim.Clear()
                dim.dim_value = value
    return fixed


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def onnx_conv_flops(path: str | Path, shape: tuple[int, int, int, int]) -> float:
    """FLOPs of one forward pass of the ONNX model at input ``shape`` (N, C, H, W).

    Raises ValueError naming the file when a convolution's shapes cannot be inferred.
    """
    model = onnx.load(str(path), load_external_data=False)
    shapes = _shapes(_fixed_input(model, shape))
    total = 0.0
    for node in model.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        weight_name = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
        out_shape, in_shape, weight = shapes.get(node.output[0]), shapes.get(node.input[0]), shapes.get(weight_name)
        if out_shape is None or in_shape is None or weight is None:
            raise ValueError(f"{path}: cannot infer shapes of {node.op_type} node {node.name!r}")
        kernel = int(np.prod(weight[2:]))  # weight[1] already holds C/groups
        if node.op_type == "ConvTranspose":
            # weight is (C_in, C_out/groups, k...); every input pixel scatters into the output
            total += 2.0 * np.prod(in_shape) * weight[1] * kernel
        else:
            # weight is (C_out, C_in/groups, k...); every output pixel gathers a window
            total += 2.0 * np.prod(out_shape) * weight[1] * kernel
    return float(total)


_CEILING_SCRIPT = """
import json, sys, time
import numpy as np
n, seconds = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best, start = float("inf"), time.perf_counter()
while time.perf_counter() - start < seconds:
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(json.dumps({"n": n, "gflops": 2.0 * n**3 / best / 1e9}))
"""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def matmul_ceiling(threads: int, n: int = 2048, seconds: float = 1.5) -> dict:
    """Best-of float32 ``n``x``n`` matmul GFLOP/s with ``threads`` BLAS threads."""
    env = dict(os.environ, **{name: str(threads) for name in _THREAD_VARIABLES})
    result = subprocess.run(
        [sys.executable, "-c", _CEILING_SCRIPT, str(n), str(seconds)],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["threads"] = threads
    return record
