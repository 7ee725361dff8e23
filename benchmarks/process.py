"""Measurements that need a fresh process: cold start and peak memory of the runtime CLI.

The child is the real bedside command, ``python -m runtime.enhance``. Cold start is the wall
time from spawning it to its exit with the enhanced file written. Peak memory is the child's
own resident high-water mark, recorded inside it by :mod:`benchmarks.peak_rss`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENHANCE_MODULE = "runtime.enhance"


def measure_process(command: list[str], timeout_s: float = 300.0) -> dict:
    """Run ``command``; wall seconds from spawn to exit, exit status and the error's last lines."""
    begin = time.perf_counter()
    try:
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"wall_s": time.perf_counter() - begin, "returncode": None, "error": f"timed out after {timeout_s} s"}
    wall = time.perf_counter() - begin
    tail = " | ".join(result.stderr.strip().splitlines()[-3:])
    return {"wall_s": wall, "returncode": result.returncode, "error": tail or "failed" if result.returncode else None}


def enhance_arguments(model: str, dicom: Path, out_dir: Path, threads: int) -> list[str]:
    """Arguments of the bedside CLI enhancing one DICOM file with the ONNX Runtime backend."""
    return [str(dicom), "-o", str(out_dir), "--model", model, "--backend", "onnxruntime",
            "--threads", str(threads), "--overwrite", "--quiet"]


def python_startup() -> float:
    """Seconds for a bare ``python -c pass``: the floor under any cold start."""
    return measure_process([sys.executable, "-c", "pass"])["wall_s"]


def cold_start(model: str, dicom: Path, threads: int, repeats: int = 3) -> dict:
    """Median wall seconds over ``repeats`` fresh ``python -m runtime.enhance`` processes."""
    walls = []
    with tempfile.TemporaryDirectory(prefix="medclear-bench-") as out_dir:
        for _ in range(repeats):
            command = [sys.executable, "-m", ENHANCE_MODULE, *enhance_arguments(model, dicom, Path(out_dir), threads)]
            result = measure_process(command)
            if result["returncode"] != 0:
                return {"wall_s": None, "error": result["error"]}
            walls.append(result["wall_s"])
    walls.sort()
    return {"wall_s": walls[len(walls) // 2], "wall_s_all": walls, "error": None,
            "command": f"python -m {ENHANCE_MODULE} FILE -o DIR --model MODEL --backend onnxruntime --threads N"}


def peak_memory(model: str, dicom: Path, threads: int) -> dict:
    """Peak RSS (MB, 10^6 bytes) of one ``python -m runtime.enhance`` process on ``dicom``."""
    with tempfile.TemporaryDirectory(prefix="medclear-bench-") as out_dir:
        record = Path(out_dir) / "peak.json"
        command = [sys.executable, "-m", "benchmarks.peak_rss", str(record), ENHANCE_MODULE,
                   *enhance_arguments(model, dicom, Path(out_dir) / "out", threads)]
        result = measure_process(command)
        if result["returncode"] != 0 or not record.is_file():
            return {"peak_rss_mb": None, "error": result["error"] or "no peak memory recorded"}
        peak = json.loads(record.read_text())["peak_rss_bytes"]
    return {"peak_rss_mb": peak / 1e6, "wall_s": result["wall_s"], "error": None,
            "command": f"python -m {ENHANCE_MODULE} FILE -o DIR --model MODEL --backend onnxruntime --threads N"}
