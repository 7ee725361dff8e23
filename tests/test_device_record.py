"""scripts/device_record.py: what a lent-GPU call returned, summarized without hiding failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.script_loader import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_record.py"


@pytest.fixture(scope="module")
def record():
    return load_script(SCRIPT)


@pytest.mark.parametrize("line, summary", [
    ("6 passed, 3 skipped, 43 deselected in 2.32s", "6 passed, 3 skipped, 43 deselected"),
    ("1 failed, 5 passed in 2.30s", "1 failed, 5 passed"),
    ("12 skipped in 0.50s", "12 skipped"),
    ("6 passed, 3 skipped in 75.01s (0:01:15)", "6 passed, 3 skipped"),
])
def test_pytest_summary_is_kept_whatever_it_says(record, line, summary):
    log = f"torch 2.11.0 cuda True\ncuda-bindings 13.3.1\n......sss\n{line}\n"
    tests = record.summarize_tests(log)
    assert tests["pytest"] == summary and tests["cuda_bindings"] == "13.3.1"


def _write_log(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_run_summary_takes_first_and_best_evaluation(record, tmp_path):
    start = {"event": "start", "config": {"stage": "distill", "model": {"name": "student"},
                                          "train": {"batch_size": 64, "lr": 3e-4, "num_workers": 2, "max_minutes": 5.5}}}
    log = _write_log(tmp_path / "log.jsonl", [
        start,
        {"step": 0, "eval": {"psnr": 40.0, "psnr_CT": 41.0, "psnr_input_CT": 30.0}},
        {"step": 50, "loss": 0.1, "steps_per_s": 26.8},
        {"step": 100, "eval": {"psnr": 42.0, "psnr_CT": 43.0}},
        {"step": 150, "eval": {"psnr": 41.5}},
    ])
    run = record.summarize_run(log)
    assert run["first_eval"] == {"step": 0, "psnr": 40.0, "psnr_CT": 41.0}  # the input's own PSNR left out
    assert run["best_eval"]["step"] == 100 and run["steps"] == 150 and run["steps_per_s"] == 26.8


def test_a_run_killed_before_its_first_evaluation_is_kept(record, tmp_path):
    start = {"event": "start", "config": {"stage": "teacher", "model": {"name": "unetpp"},
                                          "train": {"batch_size": 32, "lr": 1e-3, "num_workers": 2, "max_minutes": 1}}}
    run = record.summarize_run(_write_log(tmp_path / "log.jsonl", [start, {"step": 20, "loss": 0.2, "steps_per_s": 5.0}]))
    assert run["best_eval"] is None and run["first_eval"] is None and run["steps"] == 20
