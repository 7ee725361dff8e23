"""One shape for everything the benchmarks run: a runtime backend (ONNX Runtime, TensorRT)
or the teacher in PyTorch (the reference the student is compared with) behind the same
backend interface, with the contract of its checkpoint, so that every model goes through the
runtime's inference path (``runtime.pipeline``) and is fed what its own contract asks for.

``open_runner(spec)`` takes a model file (``.onnx``, ``.engine``, a ``.pt`` checkpoint) or
``arch:NAME[:key=value,...]`` (an untrained trainer model, for timing before training).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.flops import onnx_conv_flops
from benchmarks.record import file_record
from runtime.backends.base import Backend, InputConstraints
from runtime.model_contract import INPUT_NAME, ModelContract


class SkipModel(RuntimeError):
    """This model cannot be measured on this machine; the message says why."""


class TorchBackend(Backend):
    """A PyTorch module (the teacher) in the runtime's backend interface, loaded on creation."""

    kind = "pytorch"

    def __init__(self, module: object, contract: ModelContract, spec: str) -> None:
        super().__init__(spec)
        self.module = module
        self._contract = contract
        self._constraints = InputConstraints(INPUT_NAME, contract.size_multiple, channels=contract.input_channels)
        self.is_open = True  # nothing to load: ``open()`` must not look for a file

    def _open(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()

    def _close(self) -> None:
        pass


@dataclass
class Runner:
    """A loaded model: ``backend`` for the inference path, ``run(batch) -> (output, stage seconds)``."""

    spec: str
    label: str
    kind: str  # "onnxruntime" | "tensorrt" | "pytorch"
    engine: str  # what executes it, in words
    precision: str
    size_multiple: int
    backend: Backend
    info: dict = field(default_factory=dict)

    def input_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The model input's shape for ``batch`` images of ``height`` x ``width``: ``[N, C, H, W]``
        with the contract's input channels (2 for a noise-map model)."""
        return (batch, self.backend.contract.input_channels, height, width)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Infer one ``[N, C, H, W]`` model input; stages are ``compute`` plus h2d/d2h where known."""
        begin = time.perf_counter()
        output = self.backend.infer(batch)
        elapsed = time.perf_counter() - begin
        split = getattr(self.backend, "last_timings", None)
        if isinstance(split, dict) and split:
            return output, {k: float(v) for k, v in split.items()}
        return output, {"compute": elapsed}

    def flops(self, shape: tuple[int, int, int, int]) -> float | None:
        """Counted FLOPs of one forward pass at ``shape`` (None when they cannot be counted)."""
        try:
            if isinstance(self.backend, TorchBackend):
                from trainer.models import count_flops

                return float(count_flops(self.backend.module, shape))
            if self.spec.endswith(".onnx"):
                return onnx_conv_flops(self.spec, shape)
            source = self.info.get("source_onnx")  # an engine's FLOPs are its source ONNX's
            return onnx_conv_flops(source, shape) if source else None
        except (ValueError, OSError):
            return None

    def close(self) -> None:
        """Free the backend."""
        self.backend.close()


def _open_backend(path: Path, threads: int) -> Runner:
    """A runtime backend opened the way the bedside CLI opens it (``runtime.pipeline.open_model``)."""
    from runtime.backends import BackendError
    from runtime.pipeline import open_model

    if path.suffix != ".onnx" and importlib.util.find_spec("tensorrt") is None:
        raise SkipModel(f"{path.name}: TensorRT is not installed on this machine (no GPU); run it on a GPU runner")
    try:
        backend = open_model(path, threads=threads)
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
        precision=contract.precision, size_multiple=contract.size_multiple, backend=backend, info=info,
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
        label, checkpoint = spec, {}
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
    from compiler.export import contract_for  # the contract its ONNX export would carry

    contract = contract_for(model, checkpoint, "fp32", "")
    return Runner(
        spec=spec, label=label, kind="pytorch", engine=f"pytorch {torch.__version__} (CPU, {threads} threads)",
        precision="fp32", size_multiple=contract.size_multiple, backend=TorchBackend(model.eval(), contract, spec),
        info=info,
    )


def missing_model_files(specs: list[str]) -> list[str]:
    """The specs that name a model file which does not exist (``arch:`` specs name no file)."""
    return [spec for spec in specs if not spec.startswith("arch:") and not Path(spec).is_file()]


def refuse_missing_models(parser: argparse.ArgumentParser, models: list[str], teacher: str | None = None) -> None:
    """A file the user named that is not there is a mistake to stop at (``parser.error``), not a
    model to skip as one this machine cannot run."""
    missing = missing_model_files([*models, *([teacher] if teacher else [])])
    if missing:
        parser.error(f"model file not found: {', '.join(missing)}")


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
