"""ONNX -> TensorRT engine (FP16 or INT8) plus its sidecar, on one code path for TensorRT 8.5-11.

What differs between releases lives in small ``@trt_api``-gated functions:
  * 8.5/8.6 (JetPack 5/6.0): EXPLICIT_BATCH network flag, precision from builder flags.
  * 10.x (JetPack 6.1+ is 10.3): no batch flag; builder flags, or ``--strongly-typed``.
  * 11.x: precision builder flags and calibrators are gone; the network is strongly typed and
    precision comes from the graph (an FP16-typed ONNX, or Q/DQ nodes for INT8).
Everything else (parsing, profile, workspace, timing cache, DLA, serialization) is shared.
Names follow the TensorRT Python API as used in NVIDIA's samples and Polygraphy.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from compiler.errors import CompilerError
from compiler.onnx_io import load_model, qdq_summary, read_contract, save_model, slim
from compiler.trt_gate import import_tensorrt, in_range, require, select, trt_api
from runtime.outputs import atomic_write
from runtime.engine_sidecar import EngineSidecarError, detect_gpu, sha256_file, write_sidecar
from runtime.model_contract import CHANNEL_CONTENTS, INPUT_NAME

PRECISIONS = ("fp16", "int8")
DEFAULT_WORKSPACE_MIB = 1024


@dataclass
class BuildOptions:
    """Everything ``python -m compiler build`` takes."""

    onnx_path: Path
    out: Path
    precision: str
    opt: tuple[int, ...]
    min: tuple[int, ...] | None = None
    max: tuple[int, ...] | None = None
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    timing_cache: Path | None = None
    dla_core: int | None = None
    version_compatible: bool = False
    strongly_typed: bool = False
    calibration_cache: Path | None = None

    @property
    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max); a missing bound defaults to ``opt`` (a fixed-shape profile)."""
        return (self.min or self.opt, self.opt, self.max or self.opt)

    def command(self) -> str:
        """The ``python -m compiler build`` command line that reproduces this build."""
        lo, opt, hi = (shape_string(s) for s in self.shapes)
        args = ["python", "-m", "compiler", "build", "--onnx", str(self.onnx_path),
                "--precision", self.precision, "--out", str(self.out),
                "--min", lo, "--opt", opt, "--max", hi, "--workspace-mib", str(self.workspace_mib)]
        if self.timing_cache:
            args += ["--timing-cache", str(self.timing_cache)]
        if self.dla_core is not None:
            args += ["--dla-core", str(self.dla_core)]
        if self.version_compatible:
            args.append("--version-compatible")
        if self.strongly_typed:
            args.append("--strongly-typed")
        if self.calibration_cache:
            args += ["--calibration-cache", str(self.calibration_cache)]
        return shlex.join(args)


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x1x512x512' -> (1, 1, 512, 512); CompilerError unless four positive ints with C 1 or 2."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1 or shape[1] not in CHANNEL_CONTENTS:
        raise CompilerError(f"shape {text!r}: expected NxCxHxW with C=1 (2 for a noise-map model), e.g. 1x1x512x512")
    return shape


def with_channels(options: BuildOptions, channels: int) -> BuildOptions:
    """``options`` whose profile shapes have the model's input ``channels``: a shape given with
    C=1 (the image) is widened to a noise-map model's 2; any other C must be the model's."""
    shapes = {"min": options.min, "opt": options.opt, "max": options.max}
    for shape in filter(None, shapes.values()):
        if shape[1] not in (1, channels):
            raise CompilerError(f"profile shape {shape_string(shape)}: the model takes {channels} input channel(s)")
    return replace(options, **{k: None if s is None else (s[0], channels, *s[2:]) for k, s in shapes.items()})


def shape_string(shape: tuple[int, ...]) -> str:
    """(1, 1, 512, 512) -> '1x1x512x512'."""
    return "x".join(str(d) for d in shape)


def check_profile(options: BuildOptions, size_multiple: int) -> None:
    """min <= opt <= max per axis, H and W multiples of the model's size multiple, DLA fixed."""
    lo, opt, hi = options.shapes
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise CompilerError(f"profile needs min <= opt <= max per axis, got {lo} {opt} {hi}")
    for shape in (lo, opt, hi):
        if shape[2] % size_multiple or shape[3] % size_multiple:
            raise CompilerError(
                f"profile shape {shape_string(shape)}: H and W must be multiples of {size_multiple}"
            )
    if options.dla_core is not None and not lo == opt == hi:
        raise CompilerError("--dla-core needs a fixed shape: give --min, --opt and --max equal")


def prepare_onnx(options: BuildOptions, trt_version: str, workdir: Path) -> Path:
    """The ONNX file TensorRT should parse: as given, or FP16-typed for strongly typed FP16."""
    model = load_model(options.onnx_path)
    quantized = qdq_summary(model).is_quantized
    strongly = strongly_typed(options, trt_version)
    if options.precision == "int8":
        needs_qdq = strongly or options.calibration_cache is None
        if needs_qdq and not quantized:
            raise CompilerError(
                f"{options.onnx_path}: INT8 needs an ONNX with Q/DQ nodes here "
                "(export a QAT checkpoint or run `python -m compiler calibrate`)"
            )
        return options.onnx_path
    if strongly and not quantized:
        return save_model(fp16_model(model), workdir / "model.fp16.onnx")
    return options.onnx_path


def fp16_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16-typed copy of an fp32 model with fp32 input/output (for strongly typed builds)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True)
    # The converter appends its input casts out of order; slimming sorts the graph again and
    # keeps the metadata.
    return slim(converted)


def strongly_typed(options: BuildOptions, trt_version: str) -> bool:
    """TensorRT 11 is always strongly typed; 10.x when asked; 8.x cannot be."""
    if in_range(trt_version, "11", None):
        return True
    if options.strongly_typed and not in_range(trt_version, "10", None):
        raise CompilerError(f"--strongly-typed needs TensorRT >= 10 (this is {trt_version})")
    return options.strongly_typed


# ---- version-gated TensorRT calls -------------------------------------------------------


@trt_api(since="8.5", before="10")
def network_flags_explicit_batch(trt, strongly: bool) -> int:
    """8.x: implicit batch is the default, so ask for an explicit-batch network."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


@trt_api(since="10")
def network_flags_typed(trt, strongly: bool) -> int:
    """10.x/11.x: networks are explicit-batch; optionally strongly typed (always on 11)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly else 0


@trt_api(since="8.5", before="11")
def precision_builder_flags(trt, config, precision: str) -> None:
    """8.x/10.x weakly typed: let TensorRT pick FP16 (and INT8 where Q/DQ or a calibrator say)."""
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


@trt_api(since="10")
def precision_from_graph(trt, config, precision: str) -> None:
    """Strongly typed: the ONNX's types and Q/DQ nodes are the precision; nothing to set."""


@trt_api(since="8.5", before="11")
def attach_calibrator(trt, config, calibrator, profile) -> None:
    """Implicit INT8 calibration (TensorRT <= 10): the calibrator and its input profile."""
    config.int8_calibrator = calibrator
    config.set_calibration_profile(profile)


@trt_api(since="8.6")
def set_version_compatible(trt, config) -> None:
    """A plan the lean runtime of this and later TensorRT releases can run."""
    config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)


@trt_api()
def parse_onnx(trt, builder, logger, onnx_path: Path, flags: int):
    """Create a network and parse ``onnx_path`` into it; (network, parser) kept alive together."""
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompilerError(f"{onnx_path}: TensorRT could not parse the ONNX: {errors}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [INPUT_NAME]:
        raise CompilerError(f"{onnx_path}: expected one input {INPUT_NAME!r}, found {names}")
    return network, parser


@trt_api()
def base_config(trt, builder, workspace_mib: int, shapes):
    """Builder config with the workspace limit and one optimization profile for the input."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    return config, profile


@trt_api()
def load_timing_cache(trt, config, path: Path | None) -> None:
    """Start from a saved timing cache (or an empty one) so rebuilds reuse tactic timings."""
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)


@trt_api()
def save_timing_cache(trt, config, path: Path | None) -> None:
    """Write the (grown) timing cache back."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(config.get_timing_cache().serialize()))


@trt_api()
def use_dla(trt, builder, config, core: int) -> None:
    """Run layers on DLA core ``core``; layers DLA cannot run fall back to the GPU."""
    if core < 0 or core >= builder.num_DLA_cores:
        raise CompilerError(f"--dla-core {core}: this device has {builder.num_DLA_cores} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


@trt_api()
def serialize(trt, builder, network, config) -> bytes:
    """Build and serialize the engine; CompilerError if TensorRT returns nothing."""
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CompilerError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)


# ---- the build ----------------------------------------------------------------------------


@trt_api()
def build_serialized(trt, options: BuildOptions, onnx_path: Path, calibrator=None) -> bytes:
    """Run TensorRT's builder for ``options`` on ``onnx_path``; the serialized plan."""
    version = trt.__version__
    strongly = strongly_typed(options, version)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = select(version, network_flags_explicit_batch, network_flags_typed)(trt, strongly)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path, flags)
    config, profile = base_config(trt, builder, options.workspace_mib, options.shapes)
    configure_precision = precision_from_graph if strongly else precision_builder_flags
    configure_precision(trt, config, options.precision)
    if calibrator is not None:
        if strongly:
            raise CompilerError(f"TensorRT {version} strongly typed builds take no calibrator; use a Q/DQ ONNX")
        require(version, attach_calibrator, "INT8 calibration")(trt, config, calibrator, profile)
    if options.version_compatible:
        require(version, set_version_compatible, "--version-compatible")(trt, config)
    if options.dla_core is not None:
        use_dla(trt, builder, config, options.dla_core)
    load_timing_cache(trt, config, options.timing_cache)
    plan = serialize(trt, builder, network, config)
    save_timing_cache(trt, config, options.timing_cache)
    return plan


@trt_api(since="8.5", before="11")
def cache_calibrator(trt, cache: Path):
    """An IInt8EntropyCalibrator2 that only replays a calibration cache (Polygraphy's)."""
    if not cache.is_file():
        raise CompilerError(f"{cache}: calibration cache not found")
    from polygraphy.backend.trt import Calibrator

    return Calibrator(data_loader=[], cache=str(cache), BaseClass=trt.IInt8EntropyCalibrator2)


@trt_api()
def build(options: BuildOptions) -> dict:
    """Build ``options.out`` and its sidecar; returns the sidecar record.

    CompilerError (one line) where TensorRT or a GPU is missing or the inputs are invalid.
    """
    if options.precision not in PRECISIONS:
        raise CompilerError(f"--precision must be one of {', '.join(PRECISIONS)}")
    contract = read_contract(load_model(options.onnx_path), source=str(options.onnx_path))
    options = with_channels(options, contract.input_channels)
    check_profile(options, contract.size_multiple)
    trt = import_tensorrt()
    try:
        gpu_name, capability = detect_gpu()
    except EngineSidecarError as error:
        raise CompilerError(f"cannot build a TensorRT engine: {error}") from error
    version = trt.__version__
    calibrator = None
    if options.calibration_cache is not None:
        if options.precision != "int8":
            raise CompilerError("--calibration-cache is for --precision int8")
        calibrator = require(version, cache_calibrator, "--calibration-cache")(trt, options.calibration_cache)
    with tempfile.TemporaryDirectory() as tmp:
        parsed = prepare_onnx(options, version, Path(tmp))
        plan = build_serialized(trt, options, parsed, calibrator)
    atomic_write(options.out, lambda handle: handle.write(plan))
    lo, opt, hi = options.shapes
    record = {
        "tensorrt_version": version,
        "gpu_name": gpu_name,
        "compute_capability": capability,
        "precision": options.precision,
        "strongly_typed": strongly_typed(options, version),
        "profile": {"input": INPUT_NAME, "min": list(lo), "opt": list(opt), "max": list(hi)},
        "onnx_path": str(options.onnx_path),
        "onnx_sha256": sha256_file(options.onnx_path),
        "dla_core": options.dla_core,
        "version_compatible": options.version_compatible,
        "workspace_mib": options.workspace_mib,
        "build_command": options.command(),
        "model_contract": contract.to_metadata(),
    }
    write_sidecar(options.out, record)
    return record
