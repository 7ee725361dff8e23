"""The JSON sidecar beside a TensorRT engine, and the "does this engine fit this machine" check.

``X.engine`` is only valid for the TensorRT version and GPU it was built with. The compiler
writes ``X.engine.json`` when it builds the engine; the runtime reads it back and refuses an
engine that does not match the machine or whose bytes changed, saying how to rebuild it. The
sidecar is checked field by field before use, and nothing read from it is shown as a command
to run. No torch, no TensorRT here: the runtime imports this module on every machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import re
from pathlib import Path

from runtime.logtext import cause

SIDECAR_FORMAT = "medclear-engine/1"
SIDECAR_SUFFIX = ".json"
FIELD_LIMIT = 256
# Fixed text: a command read from the sidecar is never shown, since a forged file could suggest anything.
REBUILD_HINT = (
    "rebuild it on this machine with `python -m compiler build` from the same ONNX model "
    "(docs/COMPILER.md)"
)


class EngineSidecarError(RuntimeError):
    """An engine's sidecar is missing, malformed, or does not match this machine or file."""


def sidecar_path(engine_path: str | Path) -> Path:
    """``X.engine`` -> ``X.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(engine_path: str | Path, info: dict) -> Path:
    """Write ``info`` (plain JSON data) as the engine's sidecar; adds format and engine sha256."""
    record = dict(info)
    record["format"] = SIDECAR_FORMAT
    record["engine_sha256"] = sha256_file(engine_path)
    path = sidecar_path(engine_path)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(engine_path: str | Path) -> dict:
    """The sidecar of ``engine_path`` as a dict; EngineSidecarError if missing or malformed."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineSidecarError(
            f"{path}: engine sidecar missing; rebuild the engine with `python -m compiler build`"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise EngineSidecarError(f"{path}: unreadable engine sidecar ({cause(error)})") from None
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise EngineSidecarError(f"{path}: not a {SIDECAR_FORMAT} sidecar")
    problem = _malformed(record)
    if problem:
        raise EngineSidecarError(f"{path}: malformed engine sidecar: {problem}; {REBUILD_HINT}")
    return record


def _malformed(record: dict) -> str | None:
    """What is wrong with a sidecar's fields, or None: the runtime relies on their types."""
    for key in ("tensorrt_version", "gpu_name", "compute_capability"):
        if not isinstance(record.get(key), str) or len(record[key]) > FIELD_LIMIT:
            return f"{key} must be a string"
    if not re.fullmatch(r"[0-9a-f]{64}", str(record.get("engine_sha256", ""))):
        return "engine_sha256 must be 64 hex digits"
    if record.get("dla_core") is not None and not _is_int(record["dla_core"], 0, 15):
        return "dla_core must be an integer 0..15 or null"
    if not isinstance(record.get("version_compatible", False), bool):
        return "version_compatible must be true or false"
    for key in ("contract", "metadata", "model_contract"):
        if key in record and not isinstance(record[key], dict):
            return f"{key} must be a JSON object"
    return None


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); non-digits inside a part are ignored."""
    parts = []
    for part in str(version).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_sidecar(
    engine_path: str | Path, trt_version: str, gpu_name: str, compute_capability: str
) -> None:
    """Raise EngineSidecarError unless the engine at ``engine_path`` was built for this machine.

    Checks the engine's sha256, the TensorRT version (exact, or same-or-newer within the
    major version for version-compatible plans), the compute capability and the GPU name.
    """
    record = read_sidecar(engine_path)
    problems = []
    if record.get("engine_sha256") != sha256_file(engine_path):
        problems.append("engine file changed since it was built (sha256 mismatch)")
    built_trt = str(record.get("tensorrt_version", ""))
    if record.get("version_compatible"):
        built, here = version_tuple(built_trt), version_tuple(trt_version)
        if here[:1] != built[:1] or here < built:
            problems.append(
                f"version-compatible engine built with TensorRT {cause(built_trt)}, this machine has {trt_version}"
            )
    elif built_trt != str(trt_version):
        problems.append(f"built with TensorRT {cause(built_trt)}, this machine has {trt_version}")
    built_cc = str(record.get("compute_capability", ""))
    if built_cc != str(compute_capability):
        problems.append(f"built for compute capability {cause(built_cc)}, this GPU is {compute_capability}")
    built_gpu = str(record.get("gpu_name", ""))
    if built_gpu != str(gpu_name):
        problems.append(f"built on GPU {cause(repr(built_gpu))}, this GPU is {gpu_name!r}")
    if problems:
        raise EngineSidecarError(f"{engine_path}: {'; '.join(problems)}; {REBUILD_HINT}")


def detect_gpu(device: int = 0) -> tuple[str, str]:
    """(name, "major.minor") of a CUDA device via the driver library (libcuda), no bindings needed.

    Raises EngineSidecarError when no NVIDIA driver or device is present.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as error:
        raise EngineSidecarError(f"no NVIDIA driver found (libcuda.so.1: {error})") from error
    handle = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(handle), device) != 0:
        raise EngineSidecarError(f"no CUDA device {device} available")
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (stable driver API enums).
    if (
        cuda.cuDeviceGetName(name, len(name), handle) != 0
        or cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle) != 0
        or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle) != 0
    ):
        raise EngineSidecarError(f"could not query CUDA device {device}")
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"
