"""ONNX Runtime backend: CPUs (and the CUDA execution provider where it is installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendError, InputConstraints
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract, ModelContractError

# Tried in this order; only those onnxruntime reports as available are used.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# Graph optimization levels by name: "all" (the default) fuses Q/DQ into integer kernels,
# "basic" keeps Q/DQ as float ops (the graph's own semantics, what TensorRT computes).
OPTIMIZATION_LEVELS = ("basic", "all")


def available_providers() -> list[str]:
    """The preferred execution providers this onnxruntime build offers."""
    import onnxruntime as ort

    offered = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in offered]


def graph_optimization(name: str):
    """onnxruntime's GraphOptimizationLevel for ``basic`` or ``all``; BackendError otherwise."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if name not in levels:
        raise BackendError(f"ONNX Runtime optimization {name!r}: use one of {', '.join(OPTIMIZATION_LEVELS)}")
    return levels[name]


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model with onnxruntime: full graph optimization (or ``basic``), settable
    thread count and execution providers."""

    kind = "onnxruntime"

    def __init__(
        self, model_path: str | Path, threads: int | None = None, providers: list[str] | None = None,
        optimization: str = "all",
    ) -> None:
        super().__init__(model_path)
        self.threads = threads
        self.providers = providers
        self.optimization = optimization
        self._session = None

    def describe(self) -> str:
        providers = self._session.get_providers() if self._session is not None else self.providers
        return f"onnxruntime ({', '.join(providers or available_providers())})"

    def _open(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = graph_optimization(self.optimization)
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        options.log_severity_level = 3  # errors only: warnings are not the user's business
        try:
            self._session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=self.providers or available_providers()
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise BackendError(f"{self.model_path}: onnxruntime cannot load the model: {error}") from error
        metadata = self._session.get_modelmeta().custom_metadata_map
        try:
            self._contract = ModelContract.from_metadata(metadata, source=str(self.model_path))
        except ModelContractError as error:
            raise BackendError(str(error)) from error
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise BackendError(
                f"{self.model_path}: model must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"has {sorted(inputs)} -> {sorted(outputs)}"
            )
        self._constraints = _constraints_from_shape(inputs[INPUT_NAME].shape, self._contract, str(self.model_path))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (output,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return np.asarray(output, dtype=np.float32)

    def _close(self) -> None:
        self._session = None


def _constraints_from_shape(shape: list, contract: ModelContract, source: str) -> InputConstraints:
    """Fixed integer axes in the ONNX input shape become both the min and the max; a fixed
    channel axis must be the contract's ``input_channels``."""
    channels = contract.input_channels
    if len(shape) != 4:
        raise BackendError(f"model input {INPUT_NAME!r} must be 4-D [N, {channels}, H, W], is {shape}")
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if fixed[1] not in (None, channels):
        raise BackendError(f"{source}: model input {INPUT_NAME!r} has {fixed[1]} channel(s), its contract "
                           f"(noise conditioning {contract.noise_conditioning!r}) says {channels}; re-export it")
    fixed[1] = channels
    if all(d is None for d in fixed[:1] + fixed[2:]):
        return InputConstraints(INPUT_NAME, contract.size_multiple, channels=channels)
    low = tuple(d if d is not None else 1 for d in fixed)
    high = tuple(d if d is not None else 1 << 30 for d in fixed)
    return InputConstraints(INPUT_NAME, contract.size_multiple, low, high, channels)  # type: ignore[arg-type]
