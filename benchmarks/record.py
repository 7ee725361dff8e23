"""The provenance every benchmark JSON carries: machine, library versions, model hashes."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path

from runtime.engine_sidecar import sha256_file
from runtime.outputs import atomic_write

_LIBRARIES = (
    "numpy", "onnx", "onnxruntime", "torch", "pydicom", "scikit-image", "PyWavelets",
    "tensorrt", "nvidia-modelopt", "matplotlib",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU model, core counts, memory, OS and Python of this machine."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu_name(),
    }


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name from the driver's proc files, None when there is none."""
    root = Path("/proc/driver/nvidia/gpus")
    if not root.is_dir():
        return None
    for info in sorted(root.glob("*/information")):
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return "NVIDIA GPU"


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape the numbers (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_record(path: str | Path) -> dict:
    """Path, size and sha256 of a model file."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def header(command: str, settings: dict) -> dict:
    """The common head of every benchmark record."""
    return {
        "benchmark": command,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "libraries": library_versions(),
        "settings": settings,
    }


def write_json(record: dict, path: str | Path) -> Path:
    """Write ``record`` as indented JSON, atomically, creating the parent folder."""
    path = Path(path)
    text = json.dumps(record, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def writable_problem(path: str | Path) -> str | None:
    """Why an output file could not be written there (checked before minutes of measuring), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    try:  # the folder the run would create anyway, and a file in it (root passes os.access everywhere)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        return f"{path}: cannot write there ({error.strerror or error})"
    return None


def refuse_unwritable(parser, *paths: str | Path | None) -> None:
    """``parser.error`` (exit 2, one line) for the first output path that could not be written."""
    for path in paths:
        problem = writable_problem(path) if path is not None else None
        if problem:
            parser.error(problem)


def refuse_missing_config(parser, data_from: str | None) -> None:
    """``parser.error`` unless ``data_from`` (a --data-from value) is None or an existing .json / .pt file."""
    if data_from is None:
        return
    if Path(data_from).suffix not in (".json", ".pt"):
        parser.error(f"--data-from {data_from}: a trainer config (.json) or checkpoint (.pt) is expected")
    if not Path(data_from).is_file():
        parser.error(f"--data-from {data_from}: no such file")
