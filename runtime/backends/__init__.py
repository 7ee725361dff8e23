"""Inference backends with one interface: ONNX Runtime and TensorRT."""

from runtime.backends.base import Backend, BackendError, InputConstraints
from runtime.backends.select import ModelNotFoundError, default_model, select_backend

__all__ = ["Backend", "BackendError", "InputConstraints", "ModelNotFoundError", "default_model", "select_backend"]
