"""Choosing the model file (by task) and the backend that runs it: one function each."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from runtime.backends.base import Backend, BackendError
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.tensorrt_backend import ENGINE_SUFFIXES, TensorRTBackend
from runtime.backends.triton_backend import TritonBackend, TritonTarget
from runtime.model_contract import TASK_SCALES, ModelContract

MODEL_ENV = "MEDCLEAR_MODEL"
DEFAULT_MODELS = ("medclear_student.fp32.onnx", "medclear_student.int8.onnx")
SR2_MODEL_ENV = "MEDCLEAR_SR2_MODEL"
SR2_MODELS = ("medclear_sr2.fp32.onnx", "medclear_sr2.int8.onnx")
MR_DENOISE_MODELS = ("medclear_student_mr.fp32.onnx", "medclear_student_mr.int8.onnx")
MR_SR2_MODELS = ("medclear_sr2_mr.fp32.onnx", "medclear_sr2_mr.int8.onnx")
# The models shipped for one modality, per task (fp32 before int8); a run that names no model sends
# such files to them (runtime/routing.py) and every other file to the task's default model. MR has
# its own denoiser (fine MR texture is not CT noise; docs/DECISIONS.md section 28) and its own x2
# model (k-space truncation wants band-limited interpolation, CT's blur sharpening; section 26).
MODALITY_MODELS = {"denoise": {"MR": MR_DENOISE_MODELS}, "sr2": {"CT": SR2_MODELS, "MR": MR_SR2_MODELS}}
DEFAULT_TASK = "denoise"
# Task -> (environment variable naming its model, default model files in preference order).
TASK_MODELS = {"denoise": (MODEL_ENV, DEFAULT_MODELS), "sr2": (SR2_MODEL_ENV, SR2_MODELS)}
BACKENDS = ("auto", "onnxruntime", "tensorrt", "triton")
PACKAGED_MODELS = "medclear_models"  # the installed copy of models/ (package data, pyproject.toml)
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


class ModelNotFoundError(BackendError):
    """No model file was given and no default model is installed."""


def installed_models_dir() -> Path:
    """Where the default models live: ``models/`` of a source checkout (also an editable
    install), else the ``medclear_models`` package data a ``pip install .`` put beside ``runtime``."""
    checkout = _SOURCE_ROOT / "models"
    if (_SOURCE_ROOT / "pyproject.toml").is_file():
        return checkout
    spec = importlib.util.find_spec(PACKAGED_MODELS)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else checkout


MODELS_DIR = installed_models_dir()


def default_model(models_dir: Path | None = None, task: str = DEFAULT_TASK) -> Path:
    """The task's model: ``denoise``: ``$MEDCLEAR_MODEL``, else
    ``MODELS_DIR/medclear_student.fp32.onnx`` (faster than INT8 in ONNX Runtime on CPUs;
    docs/DECISIONS.md), else the int8 one; ``sr2``: ``$MEDCLEAR_SR2_MODEL``, else
    ``medclear_sr2.fp32.onnx``, else ``medclear_sr2.int8.onnx``."""
    if task not in TASK_MODELS:
        raise BackendError(f"unknown task {task!r}; choose one of {', '.join(TASK_MODELS)}")
    env, names = TASK_MODELS[task]
    models_dir = models_dir or MODELS_DIR
    from_env = os.environ.get(env)
    if from_env:
        return Path(from_env)
    found = first_installed(names, models_dir)
    if found is not None:
        return found
    task_note = "" if task == DEFAULT_TASK else f" for --task {task}"
    raise ModelNotFoundError(
        f"no model given and no default model{task_note} in {models_dir} (looked for {', '.join(names)}); "
        f"pass --model FILE or set {env}"
    )


def installed_or_given(model: str | Path, models_dir: Path | None = None) -> Path:
    """``model`` as given, or, for a bare file name that is not in the working directory, the
    installed model of that name (``--model medclear_sr2_mr.fp32.onnx`` works after ``pip install``)."""
    path = Path(model)
    installed = (models_dir or MODELS_DIR) / path.name
    if not path.is_file() and path.name == str(model) and installed.is_file():
        return installed
    return path


def first_installed(names: tuple[str, ...], models_dir: Path | None = None) -> Path | None:
    """The first of ``names`` that is a file in ``models_dir`` (default MODELS_DIR), if any."""
    for name in names:
        candidate = (models_dir or MODELS_DIR) / name
        if candidate.is_file():
            return candidate
    return None


def modality_model(modality: str, task: str = DEFAULT_TASK, models_dir: Path | None = None) -> Path | None:
    """The installed model that ``task`` ships for ``modality`` (fp32 before int8), if any."""
    return first_installed(MODALITY_MODELS.get(task, {}).get(modality.strip().upper(), ()), models_dir)


def check_task(contract: ModelContract, task: str, source: str) -> None:
    """BackendError unless the model's contract does ``task`` (its scale: denoise 1, sr2 2)."""
    if task not in TASK_SCALES:
        raise BackendError(f"unknown task {task!r}; choose one of {', '.join(TASK_SCALES)}")
    if contract.scale != TASK_SCALES[task]:
        raise BackendError(f"{source}: the model's contract says task {contract.task!r} (scale {contract.scale}), "
                           f"not {task} (scale {TASK_SCALES[task]}); choose the model for --task {task}")


def model_kind(path: Path) -> str:
    """``"onnx"`` or ``"engine"`` from the file name; BackendError for anything else."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise BackendError(f"{path}: unknown model kind {suffix!r} (expected .onnx, .engine or .plan)")


def select_backend(
    model: str | Path | None = None, backend: str = "auto", threads: int | None = None,
    cuda_graphs: bool = False, *, cpu_only: bool = False, ort_optimization: str = "all",
    server: TritonTarget | None = None, task: str = DEFAULT_TASK,
) -> Backend:
    """An unopened backend for ``model`` (if None: the default model of ``task``).

    ``auto``: an ``.engine``/``.plan`` runs on TensorRT, an ``.onnx`` on ONNX Runtime (which uses
    its CUDA execution provider where installed, unless ``cpu_only``; ``ort_optimization`` is its
    graph optimization, ``all`` or ``basic``). ``onnxruntime``/``tensorrt`` force a backend and
    fail clearly when the file kind or the machine cannot serve it. ``triton`` (or ``auto`` with
    ``server``, or a model given as ``grpc://HOST:PORT/NAME`` / ``http://…``) runs the model on
    a Triton Inference Server.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    server = server or (TritonTarget.from_model_url(model) if model is not None else None)
    if backend == "triton" or (backend == "auto" and server is not None):
        if server is None:
            raise BackendError("the triton backend needs the server: --url HOST:PORT "
                               "(or --model grpc://HOST:PORT/NAME)")
        return TritonBackend(server)
    if server is not None:
        raise BackendError(f"a Triton server was given, which the {backend} backend does not use: drop --url",
                           "use --backend triton (or auto)")
    path = installed_or_given(model) if model is not None else default_model(task=task)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: model file not found")
    kind = model_kind(path)
    if backend == "auto":
        backend = "tensorrt" if kind == "engine" else "onnxruntime"
    if backend == "tensorrt":
        if kind != "engine":
            raise BackendError(
                f"{path}: the TensorRT backend runs engines; build one with `python -m compiler build "
                f"--onnx {path.name} ...`", "use --backend onnxruntime"
            )
        return TensorRTBackend(path, use_cuda_graphs=cuda_graphs)
    if kind != "onnx":
        raise BackendError(f"{path}: ONNX Runtime runs .onnx models, not TensorRT engines; give the .onnx model",
                           "use --backend tensorrt")
    providers = ["CPUExecutionProvider"] if cpu_only else None
    return OnnxRuntimeBackend(path, threads=threads, providers=providers, optimization=ort_optimization)
