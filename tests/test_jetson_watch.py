"""The bedside folder watcher (jetson/watch_folder.py) with a stand-in enhancer, and the
Jetson-safe requirement list (jetson/extras.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WATCHER = REPO / "jetson" / "watch_folder.py"

# Behaves like runtime.enhance's contract: exit 0 all done, 1 some input failed (one line per
# failure naming the file), 2 the model cannot be opened.
FAKE_ENHANCE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    args = sys.argv[1:]
    with open(Path(__file__).with_name("calls.log"), "a") as log:
        log.write(" ".join(args) + "\\n")
    out = Path(args[args.index("-o") + 1])
    model = args[args.index("--model") + 1] if "--model" in args else None
    if model and not Path(model).exists():
        print(f"error: {model}: model file not found", file=sys.stderr)
        sys.exit(2)
    inputs = args[: args.index("-o")]
    status = 0
    for name in inputs:
        data = Path(name).read_bytes()
        if data.startswith(b"bad"):
            print(f"error: {name}: not a DICOM file", file=sys.stderr)
            status = 1
            continue
        out.mkdir(parents=True, exist_ok=True)
        (out / (Path(name).stem + ".enhanced.dcm")).write_bytes(data.upper())
    sys.exit(status)
    """
)

PATIENT_NAMES = ["DOE^JANE_0001.dcm", "ROE^RICHARD_0002.dcm", "POE^EDGAR_0003.dcm"]


def _load_watcher():
    spec = importlib.util.spec_from_file_location("watch_folder", WATCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def site(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "fake_enhance.py").write_text(FAKE_ENHANCE)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    model = tmp_path / "model.engine"
    model.write_bytes(b"engine")
    return tmp_path, fake, inbox, model


def watch(site_root: Path, fake: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(fake)}
    return subprocess.run(
        [sys.executable, str(WATCHER), "--input", str(site_root / "inbox"), "--output", str(site_root / "out"),
         "--enhance-module", "fake_enhance", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


def test_enhances_moves_inputs_and_keeps_names_out_of_the_log(site):
    root, fake, inbox, model = site
    for name in PATIENT_NAMES:
        (inbox / name).write_bytes(b"bad" if name.startswith("ROE") else b"dicm " + name.encode())
    (inbox / "incoming.dcm.part").write_bytes(b"still arriving")
    result = watch(root, fake, "--model", str(model), "--once")
    assert result.returncode == 1, "a failed input makes --once exit 1"
    good = [n for n in PATIENT_NAMES if not n.startswith("ROE")]
    assert sorted(p.name for p in (root / "done").iterdir()) == sorted(good)
    assert sorted(p.name for p in (root / "failed").iterdir()) == ["ROE^RICHARD_0002.dcm", "ROE^RICHARD_0002.dcm.log"]
    assert "not a DICOM file" in (root / "failed" / "ROE^RICHARD_0002.dcm.log").read_text()
    for name in good:
        assert (root / "out" / (Path(name).stem + ".enhanced.dcm")).read_bytes() == b"DICM " + name.upper().encode()
    assert [p.name for p in inbox.iterdir()] == ["incoming.dcm.part"], "partial files are left alone"
    # one batch, then (it failed) one call per file
    calls = (fake / "calls.log").read_text().splitlines()
    assert len(calls) == 1 + len(PATIENT_NAMES)
    assert all("--overwrite" in c and f"--model {model}" in c for c in calls)
    log = result.stdout + result.stderr
    assert "enhanced 1 file(s)" in log and "file#" in log
    for name in PATIENT_NAMES:
        for part in (name, name.split("^")[0], Path(name).stem):
            assert part not in log


def test_unopenable_model_leaves_inputs_in_the_inbox(site):
    root, fake, inbox, _ = site
    (inbox / PATIENT_NAMES[0]).write_bytes(b"dicm")
    result = watch(root, fake, "--model", str(root / "missing.engine"), "--once")
    assert result.returncode == 1
    assert [p.name for p in inbox.iterdir()] == [PATIENT_NAMES[0]]
    assert not (root / "done").exists() or not list((root / "done").iterdir())
    assert "could not run (exit 2)" in result.stderr
    assert "model file not found" in (root / "failed" / "enhancer-error.log").read_text()


def test_dry_run_plans_and_changes_nothing(site):
    root, fake, inbox, model = site
    (inbox / "a.dcm").write_bytes(b"x")
    result = watch(root, fake, "--model", str(model), "--backend", "tensorrt", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("PLAN: ")]
    assert "-m fake_enhance" in lines[0] and "--backend tensorrt" in lines[0] and str(inbox / "a.dcm") in lines[0]
    assert [p.name for p in inbox.iterdir()] == ["a.dcm"] and not (root / "out").exists()
    assert not (fake / "calls.log").exists()


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
    spec = importlib.util.spec_from_file_location("extras", REPO / "jetson" / "extras.py")
    extras = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extras)
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
