"""The bedside folder watcher (jetson/watch_folder.py) enhancing real DICOM files in-process with
one long-lived backend (a tiny ONNX model), and the Jetson-safe requirement list (jetson/extras.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from runtime import enhance, pipeline
from runtime_fixtures import make_smoothing_model, pydicom_file
from script_loader import load_script

REPO = Path(__file__).resolve().parent.parent
WATCHER = REPO / "jetson" / "watch_folder.py"
PATIENT_NAMES = ["DOE^JANE_0001.dcm", "ROE^RICHARD_0002.dcm", "POE^EDGAR_0003.dcm"]
BAD = "ROE^RICHARD_0002.dcm"  # not a DICOM file


def _load_watcher():
    return load_script(WATCHER)


@pytest.fixture()
def site(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = pydicom_file("CT_small.dcm")
    for name in PATIENT_NAMES:
        if name == BAD:
            (inbox / name).write_bytes(b"bad: not a DICOM file")
        else:
            shutil.copy(source, inbox / name)
    model = make_smoothing_model(tmp_path / "model.onnx")
    return tmp_path, inbox, model


def watch(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WATCHER), "--input", str(root / "inbox"), "--output", str(root / "out"), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_enhances_moves_inputs_and_keeps_names_out_of_the_log(site):
    root, inbox, model = site
    (inbox / "incoming.dcm.part").write_bytes(b"still arriving")
    result = watch(root, "--model", str(model), "--once")
    assert result.returncode == 1, "a failed input makes --once exit 1"
    good = [n for n in PATIENT_NAMES if n != BAD]
    assert sorted(p.name for p in (root / "done").iterdir()) == sorted(good)
    assert sorted(p.name for p in (root / "failed").iterdir()) == [BAD, BAD + ".log"]
    assert "not a DICOM file" in (root / "failed" / (BAD + ".log")).read_text()
    for name in good:
        assert (root / "out" / (Path(name).stem + ".enhanced.dcm")).is_file()
    assert [p.name for p in inbox.iterdir()] == ["incoming.dcm.part"], "partial files are left alone"
    log = result.stdout + result.stderr
    assert "model opened once" in log and "enhanced 2 file(s), 1 failed" in log and "file#" in log
    for name in PATIENT_NAMES:
        for part in (name, name.split("^")[0], Path(name).stem):
            assert part not in log


def test_one_model_load_for_all_batches_and_outputs_as_the_cli(site, monkeypatch, tmp_path):
    """The backend is opened once and kept (not a CLI process per batch); outputs equal the CLI's."""
    root, inbox, model = site
    (inbox / BAD).unlink()
    opened = []
    real_open = pipeline.open_model
    monkeypatch.setattr(pipeline, "open_model", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    watcher = _load_watcher()
    code = watcher.main(["--input", str(inbox), "--output", str(root / "out"), "--model", str(model),
                         "--format", "npy", "--max-batch", "1", "--once", "--enhance-arg=--strength=0.5"])
    assert code == 0 and len(opened) == 1, "one model load for two batches"
    assert sorted(p.name for p in (root / "done").iterdir()) == sorted(n for n in PATIENT_NAMES if n != BAD)
    cli_out = tmp_path / "cli"
    assert enhance.main([str(root / "done" / PATIENT_NAMES[0]), "-o", str(cli_out), "--model", str(model),
                         "--format", "npy", "--strength", "0.5", "-q"]) == 0
    name = Path(PATIENT_NAMES[0]).stem + ".enhanced.npy"
    np.testing.assert_array_equal(np.load(root / "out" / name), np.load(cli_out / name))


@pytest.mark.parametrize("task", ["denoise", "sr2"])
def test_without_a_model_each_file_goes_to_its_modalitys_model_as_the_cli(tmp_path, monkeypatch, task):
    monkeypatch.delenv("MEDCLEAR_SR2_MODEL", raising=False)
    monkeypatch.delenv("MEDCLEAR_MODEL", raising=False)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom_file(name), inbox / name)
    watcher = _load_watcher()
    code = watcher.main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--format", "npy", "--once",
                         f"--enhance-arg=--task={task}"])
    assert code == 0 and sorted(p.name for p in (tmp_path / "done").iterdir()) == ["CT_small.dcm", "MR_small.dcm"]
    cli_out = tmp_path / "cli"
    assert enhance.main([str(tmp_path / "done"), "-o", str(cli_out), "--task", task, "--format", "npy", "-q"]) == 0
    scale = 2 if task == "sr2" else 1
    for name in ("CT_small", "MR_small"):  # both enhanced (the MR one by the MR model), as the CLI does
        watched = np.load(tmp_path / "out" / f"{name}.enhanced.npy")
        np.testing.assert_array_equal(watched, np.load(cli_out / "done" / f"{name}.enhanced.npy"))
        assert watched.shape[-1] == scale * pydicom.dcmread(pydicom_file(f"{name}.dcm")).Columns


def _installed_models(tmp_path: Path, monkeypatch, default: bool = True, mr: str = "working") -> str:
    """Installed models in a temporary models folder: the default denoiser (when ``default``) and
    an MR denoiser that works (``mr`` "working") or cannot be opened ("broken"); returns the MR
    denoiser's file name."""
    from onnx_fixtures import write_tiny_onnx

    from runtime.backends import select

    monkeypatch.delenv("MEDCLEAR_MODEL", raising=False)
    monkeypatch.setattr(select, "MODELS_DIR", tmp_path / "models")
    if default:
        write_tiny_onnx(tmp_path / "models" / select.DEFAULT_MODELS[0], modalities=["CT", "MR", "CR", "DX"])
    mr_model = tmp_path / "models" / select.MR_DENOISE_MODELS[0]
    if mr == "broken":
        mr_model.write_bytes(b"not an ONNX model")
    else:
        write_tiny_onnx(mr_model, seed=2, modalities=["MR"])
    return mr_model.name


def test_a_missing_default_denoiser_is_reported_before_any_file(tmp_path, monkeypatch):
    """Only the MR denoiser installed: a routed denoise run still needs the default for the rest."""
    _installed_models(tmp_path, monkeypatch, default=False)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(pydicom_file("MR_small.dcm"), inbox / "MR_small.dcm")
    code = _load_watcher().main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--once"])
    assert code == 1 and [p.name for p in inbox.iterdir()] == ["MR_small.dcm"]
    assert "no model given and no default model" in (tmp_path / "failed" / "enhancer-error.log").read_text()


def test_a_modality_model_that_cannot_open_holds_only_its_files(tmp_path, monkeypatch):
    """A broken MR denoiser keeps the MR file in the inbox; the CT file behind it is still enhanced."""
    mr_model = _installed_models(tmp_path, monkeypatch, mr="broken")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for source, name in (("MR_small.dcm", "a_mr.dcm"), ("MR_small.dcm", "b_mr.dcm"), ("CT_small.dcm", "c_ct.dcm")):
        shutil.copy(pydicom_file(source), inbox / name)  # the MR files come first in the batch
    code = _load_watcher().main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--once", "--format", "npy"])
    assert code == 1, "--once reports the files left waiting"
    assert sorted(p.name for p in inbox.iterdir()) == ["a_mr.dcm", "b_mr.dcm"]
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["c_ct.dcm"]
    assert (tmp_path / "out" / "c_ct.enhanced.npy").is_file()
    assert mr_model in (tmp_path / "failed" / "enhancer-error.log").read_text()


def test_a_broken_modality_model_is_retried_only_after_its_back_off(tmp_path, monkeypatch, caplog):
    """Files of the broken model's modality wait without reopening it for every file or pass, the
    others go on at the usual pace, and the model is tried again once its back-off has passed."""
    mr_model = _installed_models(tmp_path, monkeypatch, mr="broken")
    watcher = _load_watcher()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    args = watcher.parse_args(["--input", str(inbox), "--output", str(tmp_path / "out"), "--format", "npy"])
    for folder in (args.done, args.failed):
        folder.mkdir()
    opens = []
    real_open = pipeline.open_model
    monkeypatch.setattr(pipeline, "open_model", lambda model, *a, **k: opens.append(Path(str(model)).name)
                        or real_open(model, *a, **k))
    enhancer = watcher.Enhancer(args)
    mr_files = [inbox / f"mr{i}.dcm" for i in range(3)]
    for path in mr_files:
        shutil.copy(pydicom_file("MR_small.dcm"), path)
    caplog.set_level("DEBUG", logger="medclear.watch")
    try:
        for n in range(2):  # two passes within the back-off, a new CT file each
            shutil.copy(pydicom_file("CT_small.dcm"), inbox / f"ct{n}.dcm")
            assert enhancer.process([*mr_files, inbox / f"ct{n}.dcm"]) == (1, 0, 3)
        assert opens.count(mr_model) == 1, opens
        waits = [r for r in caplog.records if "wait in the inbox" in r.getMessage()]
        assert [r.levelname for r in waits] == ["ERROR", "DEBUG"]
        assert "mr0" not in caplog.text and watcher.token(mr_files[0]) in waits[0].getMessage()
        expired = float("-inf")
        enhancer._unopened = {model: (error, expired) for model, (error, _) in enhancer._unopened.items()}
        assert enhancer.process(mr_files) == (0, 0, 3)
        assert opens.count(mr_model) == 2, "tried again once (not per file) when the back-off has passed"
    finally:
        enhancer.close()
    assert sorted(p.name for p in inbox.iterdir()) == ["mr0.dcm", "mr1.dcm", "mr2.dcm"]


def test_a_modality_model_that_stops_working_holds_only_its_files(tmp_path, monkeypatch):
    """The MR denoiser fails mid-run (BackendUnusable): it alone is closed and backs off, its files
    wait in the inbox, and the CT files of the same batch are still enhanced by the default."""
    mr_model = _installed_models(tmp_path, monkeypatch)
    real_run_jobs = enhance.run_jobs

    def failing_for_mr(jobs, backend, *args, **kwargs):
        if Path(str(backend.source)).name == mr_model:
            raise enhance.BackendUnusable("the device was lost")
        return real_run_jobs(jobs, backend, *args, **kwargs)

    monkeypatch.setattr(enhance, "run_jobs", failing_for_mr)
    watcher = _load_watcher()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for source, name in (("MR_small.dcm", "a_mr.dcm"), ("CT_small.dcm", "b_ct.dcm"), ("MR_small.dcm", "c_mr.dcm")):
        shutil.copy(pydicom_file(source), inbox / name)
    code = watcher.main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--once", "--format", "npy"])
    assert code == 1 and sorted(p.name for p in inbox.iterdir()) == ["a_mr.dcm", "c_mr.dcm"]
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["b_ct.dcm"]
    assert "the device was lost" in (tmp_path / "failed" / "enhancer-error.log").read_text()


def test_unopenable_model_leaves_inputs_in_the_inbox(site):
    root, inbox, _ = site
    result = watch(root, "--model", str(root / "missing.onnx"), "--once")
    assert result.returncode == 1
    assert sorted(p.name for p in inbox.iterdir()) == sorted(PATIENT_NAMES)
    assert not (root / "done").exists() or not list((root / "done").iterdir())
    assert "could not be opened" in result.stderr
    assert "missing.onnx: model file not found" in (root / "failed" / "enhancer-error.log").read_text()


@pytest.mark.parametrize(("option", "message"), [("--strength=9", "strength must be between 0 and 4"),
                                                ("--batch=0", "--batch must be >= 1")])
def test_a_bad_enhance_option_is_refused_at_start(site, option, message):
    root, inbox, model = site
    result = watch(root, "--model", str(model), "--once", f"--enhance-arg={option}")
    assert result.returncode == 2 and message in result.stderr
    assert sorted(p.name for p in inbox.iterdir()) == sorted(PATIENT_NAMES)


def test_dry_run_plans_and_changes_nothing(site):
    root, inbox, model = site
    result = watch(root, "--model", str(model), "--backend", "tensorrt", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("PLAN: ")]
    assert "in this process" in lines[0] and "-m runtime.enhance" in lines[0] and "--backend tensorrt" in lines[0]
    assert str(inbox / PATIENT_NAMES[0]).replace("^", "") in lines[0].replace("^", "").replace("'", "")
    assert sorted(p.name for p in inbox.iterdir()) == sorted(PATIENT_NAMES) and not (root / "out").exists()


def test_help_explains():
    result = subprocess.run([sys.executable, str(WATCHER), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--dry-run" in result.stdout and "--input" in result.stdout


def test_settle_tracker_waits_for_a_file_to_stop_growing(tmp_path):
    watcher = _load_watcher()
    path = tmp_path / "a.dcm"
    path.write_bytes(b"1")
    tracker = watcher.SettleTracker(settle_s=5.0)
    assert tracker.settled([path], now=100.0) == []
    assert tracker.settled([path], now=103.0) == []
    path.write_bytes(b"12")  # still being written: the clock starts again
    assert tracker.settled([path], now=106.0) == []
    assert tracker.settled([path], now=110.0) == []
    assert tracker.settled([path], now=111.0) == [path]


def test_move_aside_never_overwrites(tmp_path):
    watcher = _load_watcher()
    done = tmp_path / "done"
    for content in (b"first", b"second"):
        src = tmp_path / "a.dcm"
        src.write_bytes(content)
        watcher.move_aside(src, done)
    assert sorted((p.name, p.read_bytes()) for p in done.iterdir()) == [("a.dcm", b"first"), ("a.dcm.1", b"second")]


def test_token_is_stable_and_hides_the_name():
    watcher = _load_watcher()
    token = watcher.token(Path("/x/DOE^JANE.dcm"))
    assert token == watcher.token(Path("/y/DOE^JANE.dcm")) and "DOE" not in token


# --- jetson/extras.py ------------------------------------------------------------------------


def test_compile_requirements_for_jetson_come_from_pyproject_without_torch_or_tensorrt():
    extras = load_script(REPO / "jetson" / "extras.py")
    pyproject = extras._load_toml(REPO / "pyproject.toml")
    kept = extras.jetson_requirements(pyproject, "compile")
    names = {extras.requirement_name(r) for r in kept}
    assert {"onnx", "polygraphy"} <= names
    assert not names & {"torch", "tensorrt", "nvidia-modelopt", "medclear"}
    declared = pyproject["project"]["optional-dependencies"]["compile"]
    assert set(kept) <= set(declared), "nothing is added that pyproject.toml does not declare"
    gpu = {extras.requirement_name(r) for r in extras.jetson_requirements(pyproject, "gpu")}
    assert gpu == set(), "TensorRT and the CUDA bindings are never pip-installed from the gpu extra"


def test_extras_cli_reports_an_unknown_extra():
    result = subprocess.run([sys.executable, str(REPO / "jetson" / "extras.py"), "nope"], capture_output=True, text=True)
    assert result.returncode == 2 and "no extra 'nope'" in result.stderr


def test_a_strength_the_x2_model_cannot_take_leaves_inputs_in_the_inbox(tmp_path, monkeypatch):
    """As the CLI refuses it before any file: an x2 model takes strength 1 only, so every file
    would fail; the watcher refuses the model and leaves the inbox alone."""
    monkeypatch.delenv("MEDCLEAR_SR2_MODEL", raising=False)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), inbox / "CT_small.dcm")
    watcher = _load_watcher()
    code = watcher.main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--once",
                         "--enhance-arg=--task=sr2", "--enhance-arg=--strength=2"])
    assert code == 1 and [p.name for p in inbox.iterdir()] == ["CT_small.dcm"]
    assert not (tmp_path / "done").exists() or not list((tmp_path / "done").iterdir())
    assert "strength" in (tmp_path / "failed" / "enhancer-error.log").read_text()


def test_a_modality_model_beside_the_named_model_as_the_cli(tmp_path):
    """The bedside unit names one engine; --modality-model gives MR its own, as the CLI does."""
    from onnx_fixtures import write_tiny_onnx

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom_file(name), inbox / name)
    named = write_tiny_onnx(tmp_path / "all.onnx", seed=1, modalities=["CT", "MR"])
    mr_model = write_tiny_onnx(tmp_path / "mr.onnx", seed=2, modalities=["MR"])
    options = ["--model", str(named), "--format", "npy"]
    code = _load_watcher().main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--once", *options,
                                 f"--enhance-arg=--modality-model=MR={mr_model}"])
    assert code == 0
    for name, model in (("CT_small", named), ("MR_small", mr_model)):
        assert enhance.main([str(tmp_path / "done" / f"{name}.dcm"), "-o", str(tmp_path / name), "--model", str(model),
                             "--format", "npy", "-q"]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{name}.enhanced.npy"),
                                      np.load(tmp_path / name / f"{name}.enhanced.npy"))


def test_a_modality_model_that_cannot_open_is_reported_at_start(tmp_path):
    from onnx_fixtures import write_tiny_onnx

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), inbox / "CT_small.dcm")
    named = write_tiny_onnx(tmp_path / "all.onnx", modalities=["CT", "MR"])
    code = _load_watcher().main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--once",
                                 "--model", str(named), f"--enhance-arg=--modality-model=MR={tmp_path / 'typo.engine'}"])
    assert code == 1 and [p.name for p in inbox.iterdir()] == ["CT_small.dcm"]
    assert "typo.engine" in (tmp_path / "failed" / "enhancer-error.log").read_text()
