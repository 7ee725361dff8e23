"""A Triton Inference Server model repository from medclear model files.

``python -m compiler triton-repo MODEL... -o REPO [--name medclear]`` writes::

    REPO/NAME/config.pbtxt
    REPO/NAME/<version>/model.plan                  TensorRT engine (platform tensorrt_plan)
    REPO/NAME/<version>/model_sm<cc>.plan ...       several engines: one per compute capability
    REPO/NAME/<version>/model.onnx                  ONNX (platform onnxruntime_onnx)
    REPO/NAME/<version>/model.onnx + model.py       ONNX on the Python backend (CPU; any Triton build)

The config holds dynamic batching with a small queue delay, an instance group, a warmup
request, and the model's contract (ONNX ``metadata_props`` / the engine sidecar's
``model_contract``) as string ``parameters`` that clients read back
(``runtime.backends.triton_backend``). An engine's optimization profile bounds
``max_batch_size`` and, in the ``medclear.min_shape``/``medclear.max_shape`` parameters, H and W.
The input has the contract's channels (2 for a ``noise_map`` model: the image and its noise
map, which the client adds), the output one.
Each run adds a version folder (the next free number unless ``--version``); Triton serves the
latest.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import CompilerError
from compiler.pbtxt import Enum, entries, render
from runtime.engine_sidecar import EngineSidecarError, read_sidecar, sha256_file
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract, ModelContractError
from runtime.outputs import atomic_write

REPOSITORY_FORMAT = "medclear-triton/1"
PLATFORMS = ("auto", "tensorrt", "onnxruntime", "python")
DEVICES = ("gpu", "cpu")
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")  # copied as <version>/model.py
DEFAULT_MAX_BATCH = 8  # ONNX models; an engine's profile sets its own
DEFAULT_QUEUE_DELAY_US = 500
DEFAULT_WARMUP_SIDE = 512
TRT_WORKSPACE_BYTES = 1 << 30
ENGINE_SUFFIXES = (".engine", ".plan")
Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class RepoOptions:
    """What ``triton-repo`` was asked for; None means "the default for this kind of model"."""

    name: str = "medclear"
    version: int | None = None
    platform: str = "auto"
    max_batch: int | None = None
    dynamic_batching: bool = True
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    device: str | None = None
    trt_fp16: bool = False
    warmup_side: int = DEFAULT_WARMUP_SIDE


@dataclass(frozen=True)
class ModelSource:
    """One model file and what the repository needs from it."""

    path: Path
    kind: str  # "onnx" or "engine"
    contract: dict[str, str]  # the contract's metadata keys and string values
    source_sha256: str  # the ONNX file's sha256 (an engine: its source ONNX's)
    compute_capability: str | None = None
    tensorrt_version: str | None = None
    profile: tuple[Shape, Shape, Shape] | None = None  # (min, opt, max)


@dataclass(frozen=True)
class RepoResult:
    """What was written."""

    model_dir: Path
    version: int
    config: dict
    files: tuple[Path, ...]


def read_source(path: Path) -> ModelSource:
    """An ONNX file's contract, or an engine's sidecar (contract, profile, GPU); CompilerError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CompilerError(f"{path}: model file not found")
    if path.suffix.lower() == ".onnx":
        from compiler.onnx_io import load_model, metadata

        return ModelSource(path, "onnx", _checked_contract(metadata(load_model(path)), path), sha256_file(path))
    if path.suffix.lower() not in ENGINE_SUFFIXES:
        raise CompilerError(f"{path}: expected an .onnx model or a TensorRT .engine/.plan")
    try:
        record = read_sidecar(path)
    except EngineSidecarError as error:
        raise CompilerError(str(error)) from None
    if record["engine_sha256"] != sha256_file(path):
        raise CompilerError(f"{path}: engine file changed since it was built (sha256 mismatch with its sidecar)")
    profile = record.get("profile") or {}
    try:
        shapes = tuple(tuple(int(v) for v in profile[key]) for key in ("min", "opt", "max"))
    except (KeyError, TypeError, ValueError):
        raise CompilerError(f"{path}: sidecar has no optimization profile (min/opt/max)") from None
    if any(len(shape) != 4 for shape in shapes):
        raise CompilerError(f"{path}: profile shapes must be N x C x H x W, got {profile}")
    return ModelSource(
        path, "engine", _checked_contract(record.get("model_contract") or {}, path), str(record.get("onnx_sha256", "")),
        compute_capability=record["compute_capability"], tensorrt_version=record["tensorrt_version"],
        profile=shapes,  # type: ignore[arg-type]
    )


def _checked_contract(metadata: dict, path: Path) -> dict[str, str]:
    """The medclear.* metadata, parsed once so a malformed contract fails here, not on the server."""
    try:
        ModelContract.from_metadata(metadata, source=str(path))
    except ModelContractError as error:
        raise CompilerError(str(error)) from None
    return {k: v for k, v in metadata.items() if k.startswith("medclear.")}


def platform_for(sources: list[ModelSource], requested: str) -> str:
    """tensorrt for engines, onnxruntime (or python, if asked) for one ONNX file."""
    if requested not in PLATFORMS:
        raise CompilerError(f"--platform must be one of {', '.join(PLATFORMS)}")
    kinds = {source.kind for source in sources}
    if kinds == {"engine"}:
        if requested not in ("auto", "tensorrt"):
            raise CompilerError(f"TensorRT engines are served by the tensorrt platform, not {requested}")
        return "tensorrt"
    if kinds != {"onnx"} or len(sources) != 1:
        raise CompilerError("give one ONNX model, or one or more TensorRT engines of the same model")
    if requested == "tensorrt":
        raise CompilerError("the tensorrt platform serves engines: build one with `python -m compiler build`")
    return "onnxruntime" if requested == "auto" else requested


def engine_bounds(sources: list[ModelSource]) -> tuple[Shape, Shape, Shape]:
    """The profile every engine accepts (the intersection) and the first engine's opt shape;
    the engines must come from one ONNX, one TensorRT version, distinct compute capabilities."""
    capabilities = [source.compute_capability for source in sources]
    if len(set(capabilities)) != len(capabilities):
        raise CompilerError(f"two engines for the same compute capability ({', '.join(map(str, capabilities))}); "
                            "give one engine per GPU architecture")
    for key, what in (("source_sha256", "source ONNX"), ("tensorrt_version", "TensorRT version")):
        if len({getattr(source, key) for source in sources}) != 1:
            raise CompilerError(f"the engines differ in {what}: build every engine from the same ONNX with the "
                                "TensorRT of the Triton release that serves them")
    low = tuple(max(source.profile[0][i] for source in sources) for i in range(4))
    high = tuple(min(source.profile[2][i] for source in sources) for i in range(4))
    if any(lo > hi for lo, hi in zip(low, high)):
        raise CompilerError(f"the engines' optimization profiles share no shape ({list(low)} > {list(high)})")
    if low[0] != 1:
        raise CompilerError(f"the engine profile's minimum batch is {low[0]}; Triton batching needs profiles from N=1")
    opt = sources[0].profile[1]
    opt = tuple(min(max(o, lo), hi) for o, lo, hi in zip(opt, low, high))
    return low, opt, high  # type: ignore[return-value]


def _engine_file(source: ModelSource, several: bool) -> str:
    return f"model_sm{source.compute_capability.replace('.', '')}.plan" if several else "model.plan"


def model_config(sources: list[ModelSource], options: RepoOptions) -> dict:
    """The config.pbtxt content as plain data (:mod:`compiler.pbtxt`)."""
    platform = platform_for(sources, options.platform)
    device = options.device or ("cpu" if platform == "python" else "gpu")
    if device not in DEVICES:
        raise CompilerError(f"--device must be one of {', '.join(DEVICES)}")
    if platform == "tensorrt" and device != "gpu":
        raise CompilerError("TensorRT engines run on GPU instances only (--device gpu)")
    if platform == "python" and device != "cpu":
        raise CompilerError("the python platform runs ONNX Runtime on the CPU (--device cpu)")
    if options.trt_fp16 and (platform != "onnxruntime" or device != "gpu"):
        raise CompilerError("--trt-fp16 is for ONNX models on GPU instances (the onnxruntime platform)")
    if options.instances < 1 or options.queue_delay_us < 0 or options.warmup_side < 0:
        raise CompilerError("--instances must be >= 1, --queue-delay-us and --warmup >= 0")
    contract = ModelContract.from_metadata(sources[0].contract)
    parameters = dict(sources[0].contract)
    parameters.update({"medclear.repository_format": REPOSITORY_FORMAT,
                       "medclear.source_sha256": sources[0].source_sha256})
    if platform == "tensorrt":
        low, opt, high = engine_bounds(sources)
        max_batch = high[0] if options.max_batch is None else options.max_batch
        if not 1 <= max_batch <= high[0]:
            raise CompilerError(f"--max-batch {max_batch} is outside the engine profile's batch range 1..{high[0]}")
        parameters.update({"medclear.min_shape": json.dumps([1, *low[1:]]),
                           "medclear.max_shape": json.dumps([max_batch, *high[1:]]),
                           "medclear.tensorrt_version": str(sources[0].tensorrt_version)})
        warmup = opt[2:]
    else:
        max_batch = DEFAULT_MAX_BATCH if options.max_batch is None else options.max_batch
        if max_batch < 1:
            raise CompilerError("--max-batch must be >= 1")
        side = -(-options.warmup_side // contract.size_multiple) * contract.size_multiple
        warmup = (side, side)
    config: dict = {"name": options.name}
    if platform == "python":
        config["backend"] = "python"
    else:
        config["platform"] = "tensorrt_plan" if platform == "tensorrt" else "onnxruntime_onnx"
    config["max_batch_size"] = max_batch
    config["version_policy"] = {"latest": {"num_versions": 1}}
    channels = contract.input_channels
    config["input"] = [{"name": INPUT_NAME, "data_type": Enum("TYPE_FP32"), "dims": [channels, -1, -1]}]
    config["output"] = [{"name": OUTPUT_NAME, "data_type": Enum("TYPE_FP32"), "dims": [1, -1, -1]}]
    if options.dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": options.queue_delay_us}
    config["instance_group"] = [{"count": options.instances, "kind": Enum(f"KIND_{device.upper()}")}]
    if platform == "tensorrt" and len(sources) > 1:
        config["cc_model_filenames"] = entries({s.compute_capability: _engine_file(s, True) for s in sources})
    if options.trt_fp16:
        accelerator = {"name": "tensorrt", "parameters": entries(
            {"precision_mode": "FP16", "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES)})}
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    if options.warmup_side:
        config["model_warmup"] = [{"name": f"warmup_{warmup[0]}x{warmup[1]}", "batch_size": 1, "inputs": entries(
            {INPUT_NAME: {"data_type": Enum("TYPE_FP32"), "dims": [channels, *warmup], "zero_data": True}})}]
    config["parameters"] = entries({key: {"string_value": value} for key, value in parameters.items()})
    return config


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version folder in ``model_dir`` (1 if none)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _model_files(sources: list[ModelSource], platform: str) -> dict[str, Path]:
    """Version-folder file name -> the file to copy there."""
    if platform == "tensorrt":
        return {_engine_file(s, len(sources) > 1): s.path for s in sources}
    files = {"model.onnx": sources[0].path}
    if platform == "python":
        files["model.py"] = PYTHON_MODEL
    return files


def _check_existing(model_dir: Path, config: dict) -> None:
    """An existing model folder must hold the same kind of model (platform or backend)."""
    existing = model_dir / "config.pbtxt"
    if not existing.is_file():
        return
    text = existing.read_text()
    kind = f'platform: "{config["platform"]}"' if "platform" in config else f'backend: "{config["backend"]}"'
    if kind not in text:
        raise CompilerError(f"{model_dir} serves another kind of model than {kind}; choose another --name")


def write_repository(models: list[Path], repo: Path, options: RepoOptions = RepoOptions()) -> RepoResult:
    """Write (or add a version to) ``repo/options.name`` for ``models``; CompilerError on bad input."""
    if not models:
        raise CompilerError("give at least one model file")
    if not options.name or "/" in options.name or options.name.startswith("."):
        raise CompilerError(f"--name {options.name!r} is not a valid model folder name")
    sources = [read_source(Path(m)) for m in models]
    platform = platform_for(sources, options.platform)
    config = model_config(sources, options)
    model_dir = Path(repo) / options.name
    _check_existing(model_dir, config)
    version = next_version(model_dir) if options.version is None else options.version
    version_dir = model_dir / str(version)
    if version < 1 or version_dir.exists():
        raise CompilerError(f"{version_dir}: version must be >= 1 and not exist yet (omit --version for the next one)")
    # The version folder appears whole: a server polling the repository never loads a half-copied model.
    files = _model_files(sources, platform)
    staging = model_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, source in files.items():
            shutil.copyfile(source, staging / name)
        os.replace(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = [version_dir / name for name in files]
    config_path = model_dir / "config.pbtxt"
    text = render(config)
    atomic_write(config_path, lambda handle: handle.write(text.encode()))
    return RepoResult(model_dir, version, config, (config_path, *written))
