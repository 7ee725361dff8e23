"""Triton Python-backend model (copied into a repository as ``<version>/model.py``).

Runs the ``model.onnx`` beside it through medclear's ONNX Runtime backend on the CPU, so any
Triton build with the Python backend serves a medclear ONNX model, including the server that
the nvidia-pytriton wheel ships (which has no onnxruntime backend). The server's Python
environment must have medclear installed (its runtime: numpy, onnxruntime).

Requests that Triton's dynamic batcher hands over together are grouped by image size and run
as one batch. Tensors cross the backend by DLPack: the wheel's Triton 2.51 stub was built with
a pybind11 whose ``as_numpy``/``Tensor(name, ndarray)`` misread numpy 2 arrays (zeros in,
empty out), while DLPack works with numpy 1 and 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python backend's stub

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME


def _quiet_used_capsules(unraisable) -> None:
    """The stub renames a consumed DLPack capsule "used_dlpack" where numpy's deleter expects
    "used_dltensor"; numpy then reports an unraisable ValueError although the stub owns and
    frees the tensor. Only that report is dropped."""
    if not (isinstance(unraisable.exc_value, ValueError) and "PyCapsule_GetPointer" in str(unraisable.exc_value)):
        sys.__unraisablehook__(unraisable)


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        sys.unraisablehook = _quiet_used_capsules
        folder = Path(args["model_repository"]) / args["model_version"]
        self.backend = OnnxRuntimeBackend(folder / "model.onnx", providers=["CPUExecutionProvider"]).open()

    def execute(self, requests: list) -> list:
        images = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, INPUT_NAME)) for r in requests]
        results: list = [None] * len(requests)
        for shape in {image.shape[1:] for image in images}:
            members = [i for i, image in enumerate(images) if image.shape[1:] == shape]
            try:
                output = self.backend.infer(np.concatenate([images[i] for i in members]))
            except Exception as error:  # the client gets the one-line cause
                for i in members:
                    results[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                continue
            start = 0
            for i in members:
                part = np.ascontiguousarray(output[start : start + len(images[i])])
                start += len(images[i])
                results[i] = pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(OUTPUT_NAME, part.__dlpack__())])
        return results

    def finalize(self) -> None:
        self.backend.close()
