"""The CI latency regression check: passes on an unchanged model, fails on a slower one,
``--update`` rewrites the baseline, and the verdict logic at the default tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from benchmarks import regression
from benchmarks.synthetic import conv_stack
from runtime.model_contract import OUTPUT_NAME

FAST = ["--size", "64", "--rounds", "400", "--budget-s", "1", "--threads", "1"]


def student_stand_in() -> onnx.ModelProto:
    """A small residual conv net with the model contract, like an exported student."""
    return conv_stack(channels=8, layers=3, seed=1)


def with_heavy_convs(model: onnx.ModelProto, channels: int = 32, layers: int = 4) -> onnx.ModelProto:
    """The same model with ``layers`` extra 3x3 convolutions appended after its output."""
    slow = onnx.ModelProto()
    slow.CopyFrom(model)
    for node in slow.graph.node:
        node.output[:] = ["pre_" + OUTPUT_NAME if o == OUTPUT_NAME else o for o in node.output]
    rng = np.random.default_rng(0)
    widths = [1] + [channels] * (layers - 1) + [1]
    current = "pre_" + OUTPUT_NAME
    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        weight = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.01).astype(np.float32)
        slow.graph.initializer.append(numpy_helper.from_array(weight, f"heavy_w{index}"))
        out = OUTPUT_NAME if index == layers - 1 else f"heavy{index}"
        slow.graph.node.append(helper.make_node("Conv", [current, f"heavy_w{index}"], [out], pads=[1, 1, 1, 1]))
        current = out
    onnx.checker.check_model(slow)
    return slow


@pytest.fixture()
def baseline(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "student.onnx"
    onnx.save(student_stand_in(), str(model))
    baseline = tmp_path / "baseline.json"
    assert regression.main(["--baseline", str(baseline), "--model", str(model), "--update", *FAST]) == 0
    return model, baseline


@pytest.mark.slow
def test_update_writes_baseline(baseline: tuple[Path, Path]) -> None:
    _, path = baseline
    record = json.loads(path.read_text())
    assert record["format"] == regression.BASELINE_FORMAT
    entry = record["models"]["student.onnx"]
    assert entry["ratio"] > 0 and entry["model_ms"] > 0 and entry["reference_ms"] > 0
    assert len(entry["file"]["sha256"]) == 64
    assert record["settings"]["size"] == 64 and record["settings"]["threads"] == 1
    assert record["machine"]["cpu"] and record["libraries"]["onnxruntime"]


@pytest.mark.slow
def test_unchanged_model_passes_and_slower_model_fails(baseline, tmp_path: Path, capsys) -> None:
    model, path = baseline
    original = json.loads(path.read_text())["models"]["student.onnx"]["ratio"]
    # The unchanged model passes (a wide tolerance keeps a busy shared runner from flaking;
    # the slow model below is ~25x slower, far beyond it).
    assert regression.main(["--baseline", str(path), "--model", str(model), "--tolerance", "0.5", *FAST]) == 0
    assert "ok: student.onnx" in capsys.readouterr().out

    slow_dir = tmp_path / "slow"
    slow_dir.mkdir()
    slow = slow_dir / "student.onnx"
    onnx.save(with_heavy_convs(student_stand_in()), str(slow))
    assert regression.main(["--baseline", str(path), "--model", str(slow), "--tolerance", "0.5", *FAST]) == 1
    message = capsys.readouterr().err
    assert "REGRESSION: student.onnx" in message and "baseline" in message and "tolerance +50%" in message

    # --update accepts the slower model on purpose; then it passes.
    assert regression.main(["--baseline", str(path), "--model", str(slow), "--update", *FAST]) == 0
    updated = json.loads(path.read_text())["models"]["student.onnx"]["ratio"]
    assert regression.main(["--baseline", str(path), "--model", str(slow), "--tolerance", "0.5", *FAST]) == 0
    assert updated > 3.0 * original


def test_compare_at_default_tolerance() -> None:
    assert regression.compare("m.onnx", 1.20, 1.0, 0.25)[0]
    passed, message = regression.compare("m.onnx", 1.30, 1.0, 0.25)
    assert not passed
    assert "m.onnx" in message and "1.300" in message and "baseline 1.000" in message and "+25%" in message
    assert regression.compare("m.onnx", 0.5, 1.0, 0.25)[0]  # faster is never a regression


def test_missing_baseline_is_a_usage_error(tmp_path: Path, capsys) -> None:
    model = tmp_path / "student.onnx"
    onnx.save(student_stand_in(), str(model))
    assert regression.main(["--baseline", str(tmp_path / "none.json"), "--model", str(model)]) == 2
    assert "--update" in capsys.readouterr().err


def test_committed_baseline_is_well_formed() -> None:
    path = Path(__file__).resolve().parents[1] / regression.DEFAULT_BASELINE
    record = json.loads(path.read_text())
    assert record["format"] == regression.BASELINE_FORMAT
    assert record["models"] and all(m["ratio"] > 0 for m in record["models"].values())


def test_a_noise_map_model_is_timed_against_the_one_channel_reference(tmp_path: Path) -> None:
    from onnx_fixtures import write_tiny_onnx
    from runtime.model_contract import NOISE_MAP

    model = write_tiny_onnx(tmp_path / "map.onnx", noise_conditioning=NOISE_MAP)
    baseline = tmp_path / "baseline.json"
    args = ["--baseline", str(baseline), "--model", str(model), "--size", "32", "--rounds", "9", "--budget-s", "0",
            "--threads", "1"]
    assert regression.main([*args, "--update"]) == 0
    assert json.loads(baseline.read_text())["models"]["map.onnx"]["rounds"] == 9


def test_outputs_that_cannot_be_written_and_zero_rounds_are_refused_before_measuring(tmp_path, capsys):
    from benchmarks.record import writable_problem

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "is a folder" in writable_problem(tmp_path)
    assert "cannot write there" in writable_problem(blocker / "out.json")
    assert writable_problem(tmp_path / "new" / "out.json") is None
    for argv in (["--rounds", "0"], ["--update", "--baseline", str(blocker / "b.json")]):
        with pytest.raises(SystemExit) as stopped:
            regression.parse_args(argv)
        assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--rounds must be at least 1" in err and "cannot write there" in err
