"""One shape for everything the benchmarks time: a runtime backend (ONNX Runtime, TensorRT)
or the teacher in PyTorch, the reference the student is compared with.

``open_runner(spec)`` takes a model file (``.onnx``, ``.engine``, a ``.pt`` checkpoint) or
``arch:NAME[:key=value,...]`` (an untrained trainer model, for timing before training).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.flops import onnx_conv_flops
from benchmarks.record import file_record


class SkipModel(RuntimeError):
    """This model cannot be measured on this machine; the message says why."""


@dataclass
class Runner:
    """A loaded model: ``run(batch) -> (output, stage seconds)``."""

    spec: str
    label: str
    kind: str  # "onnxruntime" | "tensorrt" | "pytorch"
    engine: str  # what executes it, in words
    precision: str
    size_multiple: int
    info: dict = field(default_factory=dict)
    _backend: object = None
    _torch_model: object = None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Infer one ``[N, 1, H, W]`` batch; stages are ``compute`` plus h2d/d2h where known."""
        if self._torch_model is not None:
            return self._run_torch(batch)
        begin = time.perf_counter()
        output = self._backend.infer(batch)
        elapsed = time.perf_counter() - begin
        split = getattr(self._backend, "last_timings", None)
        if isinstance(split, dict) and split:
            return output, {k: float(v) for k, v in split.items()}
        return output, {"compute": elapsed}

    def _run_torch(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        import torch

        with torch.inference_mode():
            begin = time.perf_counter()
            tensor = torch.from_numpy(batch)
            output = self._torch_model(tensor).numpy()
            return output, {"compute": time.perf_counter() - begin}

    def flops(self, shape: tuple[int, int, int, int]) -> float | None:
        """Counted FLOPs of one forward pass at ``shape`` (None when they cannot be counted)."""
        try:
            if self._torch_model is not None:
                from trainer.models import count_flops

                return float(count_flops(self._torch_model, shape))
            if self.spec.endswith(".onnx"):
                return onnx_conv_flops(self.spec, shape)
            source = self.info.get("source_onnx")  # an engine's FLOPs are its source ONNX's
            return onnx_conv_flops(source, shape) if source else None
        except (ValueError, OSError):
            return None

    def close(self) -> None:
        """Free the backend."""
        if self._backend is not None:
            self._backend.close()


def _open_backend(path: Path, threads: int) -> Runner:
    """A runtime backend chosen the way the bedside CLI chooses it (``select_backend``)."""
    from runtime.backends import BackendError, select_backend

    if path.suffix != ".onnx" and importlib.util.find_spec("tensorrt") is None:
        raise SkipModel(f"{path.name}: TensorRT is not installed on this machine (no GPU); run it on a GPU runner")
    try:
        backend = select_backend(path, backend="auto", threads=threads).open()
    except BackendError as error:
        raise SkipModel(str(error)) from error  # its message names the file
    contract = backend.contract
    info = {"file": file_record(path), "model_name": contract.model_name}
    if backend.kind == "tensorrt":
        sidecar, source = Path(str(path) + ".json"), path.with_suffix(".onnx")
        info["sidecar"] = str(sidecar) if sidecar.is_file() else None
        info["source_onnx"] = str(source) if source.is_file() else None  # X.engine is built from X.onnx
    return Runner(
        spec=str(path), label=path.name, kind=backend.kind, engine=backend.describe(),
        precision=contract.precision, size_multiple=contract.size_multiple, info=info, _backend=backend,
    )


def _open_torch(spec: str, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    if spec.startswith("arch:"):
        from trainer.models import create_model

        name, _, options = spec[len("arch:"):].partition(":")
        kwargs = {k: int(v) for k, v in (item.split("=") for item in options.split(",") if item)}
        model = create_model(name, **kwargs).eval()
        info = {"model_name": name, "model_kwargs": kwargs, "weights": "untrained (timing only)"}
        label = spec
    else:
        from trainer.checkpoint import load_model

        if not Path(spec).is_file():
            raise SkipModel(f"{spec}: checkpoint not found")
        try:
            model, checkpoint = load_model(spec)
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            raise SkipModel(f"cannot load the checkpoint: {error}") from error
        info = {"file": file_record(spec), "model_name": checkpoint.get("model_name"),
                "model_kwargs": checkpoint.get("model_kwargs"), "stage": checkpoint.get("stage")}
        label = Path(spec).name
    return Runner(
        spec=spec, label=label, kind="pytorch", engine=f"pytorch {torch.__version__} (CPU, {threads} threads)",
        precision="fp32", size_multiple=int(getattr(model, "size_multiple", 1)), info=info, _torch_model=model.eval(),
    )


def open_runner(spec: str, threads: int) -> Runner:
    """Open a model for timing; raises SkipModel when this machine cannot run it."""
    if spec.startswith("arch:") or spec.endswith(".pt"):
        return _open_torch(spec, threads)
    path = Path(spec)
    if not path.is_file():
        raise SkipModel(f"{spec}: model file not found")
    if path.suffix not in (".onnx", ".engine", ".plan"):
        raise SkipModel(f"{spec}: unknown model kind (expected .onnx, .engine, .plan, .pt or arch:NAME)")
    return _open_backend(path, threads)
