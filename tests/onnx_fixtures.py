"""Small ONNX models with the medclear contract in their metadata, for tests (no torch needed).

``write_tiny_onnx`` writes a residual Conv-ReLU-Conv denoiser with the real model's I/O
contract: input ``image`` / output ``enhanced``, float32 ``[N, 1, H, W]`` with dynamic N/H/W,
opset 17, and ``metadata_props`` from :class:`runtime.model_contract.ModelContract`; with a
``noise_map`` contract the input is ``[N, 2, H, W]`` (the first conv reads the noise map too, the
residual adds the image channel).
``write_tiny_sr_onnx`` writes an x2 super-resolution model of the SR students' shape,
``Resize(nearest, x2)(image) + DepthToSpace(Conv(ReLU(Conv(image))))``, output ``[N, 1, 2H, 2W]``,
with ``scale`` 2 in its contract.
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
    contract = contract or tiny_contract()
    channels = contract.input_channels
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((width, channels, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(width) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((1, width, 3, 3)) * 0.1).astype(np.float32)
    b2 = np.zeros(1, dtype=np.float32)
    image = INPUT_NAME if channels == 1 else "picture"
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", [image, "c2"], [OUTPUT_NAME], name="residual"),
    ]
    initializers = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    if channels != 1:  # the residual adds channel 0, the image
        nodes.insert(0, helper.make_node("Slice", [INPUT_NAME, "zero", "one", "one"], [image], name="image_channel"))
        initializers.update(zero=np.array([0], np.int64), one=np.array([1], np.int64))
    return _finish(nodes, initializers, ["N", 1, "H", "W"], contract, "tiny")


def _finish(nodes: list, initializers: dict[str, np.ndarray], output_dims: list, contract: ModelContract,
            name: str) -> onnx.ModelProto:
    """A checked opset-17 model with dynamic ``[N, C, H, W]`` input (C: the contract's input
    channels) and the contract as metadata."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", contract.input_channels, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, output_dims)],
        initializer=[numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="medclear-tests")
    model.ir_version = 8  # readable by every onnxruntime the project supports
    for key, value in sorted(contract.to_metadata().items()):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def sr_contract(**overrides) -> ModelContract:
    """The tiny SR model's contract: scale 2, size multiple 1, every modality."""
    values = dict(task="sr2", scale=2, size_multiple=1, modalities=("*",), model_name="tiny-sr")
    values.update(overrides)
    return tiny_contract(**values)


def tiny_sr_model(
    seed: int = 0, width: int = 4, tail: float = 0.1, contract: ModelContract | None = None
) -> onnx.ModelProto:
    """``nearest_x2(image) + DepthToSpace(Conv(ReLU(Conv(image))), 2)``; ``tail`` scales the last
    conv's weights (0: exactly nearest-neighbour upsampling). Receptive-field radius 2 pixels."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": (rng.standard_normal((width, 1, 3, 3)) * 0.3).astype(np.float32),
        "b1": (rng.standard_normal(width) * 0.05).astype(np.float32),
        "w2": (rng.standard_normal((4, width, 3, 3)) * tail).astype(np.float32),
        "b2": np.zeros(4, dtype=np.float32),
        "scales": np.array([1, 1, 2, 2], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="tail"),
        helper.make_node("DepthToSpace", ["c2"], ["detail"], blocksize=2, mode="CRD", name="shuffle"),
        helper.make_node("Resize", [INPUT_NAME, "", "scales"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor", name="upsample"),
        helper.make_node("Add", ["up", "detail"], [OUTPUT_NAME], name="residual"),
    ]
    return _finish(nodes, weights, ["N", 1, "H2", "W2"], contract or sr_contract(), "tiny_sr")


def write_tiny_sr_onnx(path: str | Path, seed: int = 0, width: int = 4, tail: float = 0.1, **contract_fields) -> Path:
    """Write the tiny x2 SR model to ``path``; ``contract_fields`` override its contract."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_sr_model(seed, width, tail, sr_contract(**contract_fields)), str(path))
    return path


def write_tiny_onnx(path: str | Path, seed: int = 0, width: int = 4, **contract_fields) -> Path:
    """Write the tiny model to ``path``; ``contract_fields`` override the contract."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_model(seed, width, tiny_contract(**contract_fields)), str(path))
    return path


def install_denoisers(monkeypatch, folder: Path, default_modalities: tuple[str, ...] = ("CT",)) -> tuple[Path, Path]:
    """A tiny default denoiser (``default_modalities``) and a tiny MR-only one of other weights,
    installed in ``folder`` as the shipped models (``MODELS_DIR``), ``$MEDCLEAR_MODEL`` unset:
    (default model, MR model). A file routed to the wrong one is refused or enhanced differently."""
    from runtime.backends import select

    monkeypatch.delenv(select.MODEL_ENV, raising=False)
    monkeypatch.setattr(select, "MODELS_DIR", folder)
    default = write_tiny_onnx(folder / select.DEFAULT_MODELS[0], seed=1, model_name="tiny-default",
                              modalities=list(default_modalities))
    return default, write_tiny_onnx(folder / select.MR_DENOISE_MODELS[0], seed=2, model_name="tiny-mr",
                                    modalities=["MR"])


def tensorrt_importable() -> bool:
    """True where ``import tensorrt`` works (then "fails cleanly without TensorRT" tests skip)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True
