"""Small ONNX models with the medclear contract in their metadata, for tests (no torch needed).

``write_tiny_onnx`` writes a residual Conv-ReLU-Conv denoiser with the real model's I/O
contract: input ``image`` / output ``enhanced``, float32 ``[N, 1, H, W]`` with dynamic N/H/W,
opset 17, and ``metadata_props`` from :class:`runtime.model_contract.ModelContract`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract

OPSET = 17


def tiny_contract(**overrides) -> ModelContract:
    """A CT contract for the tiny model; keyword arguments override fields."""
    values = dict(modalities=("CT",), size_multiple=4, precision="fp32", model_name="tiny",
                  training_data='{"sources": ["test"]}', checkpoint_sha256="0" * 64)
    values.update(overrides)
    return ModelContract(**values)


def tiny_model(seed: int = 0, width: int = 4, contract: ModelContract | None = None) -> onnx.ModelProto:
    """The tiny residual denoiser as a ModelProto (weights drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((width, 1, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(width) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((1, width, 3, 3)) * 0.1).astype(np.float32)
    b2 = np.zeros(1, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", [INPUT_NAME, "c2"], [OUTPUT_NAME], name="residual"),
    ]
    dims = ["N", 1, "H", "W"]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="medclear-tests")
    model.ir_version = 8  # readable by every onnxruntime the project supports
    for key, value in sorted((contract or tiny_contract()).to_metadata().items()):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def write_tiny_onnx(path: str | Path, seed: int = 0, width: int = 4, **contract_fields) -> Path:
    """Write the tiny model to ``path``; ``contract_fields`` override the contract."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_model(seed, width, tiny_contract(**contract_fields)), str(path))
    return path


def tensorrt_importable() -> bool:
    """True where ``import tensorrt`` works (then "fails cleanly without TensorRT" tests skip)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True
