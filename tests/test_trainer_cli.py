"""The CLI end to end with the real data layer (tiny phantom configs): teacher -> distill -> qat."""

import json
from pathlib import Path

import pytest

from trainer.__main__ import main
from trainer.checkpoint import load_model

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


@pytest.mark.slow
def test_cli_three_stages_with_trainer_data(tmp_path, capsys):
    assert main(["teacher", "--config", str(CONFIGS / "tiny_teacher.json"), "--out", str(tmp_path / "t")]) == 0
    assert main(["distill", "--config", str(CONFIGS / "tiny_distill.json"), "--out", str(tmp_path / "d"),
                 "--teacher", str(tmp_path / "t" / "best.pt"), "--set", "train.steps=6"]) == 0
    capsys.readouterr()
    assert main(["qat", "--config", str(CONFIGS / "tiny_qat.json"), "--out", str(tmp_path / "q"),
                 "--student", str(tmp_path / "d" / "best.pt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stage"] == "qat" and "qat_minus_fp32_db" in result
    model, ckpt = load_model(tmp_path / "q" / "best.pt")
    assert ckpt["quantization"]["method"] == "modelopt"
    assert ckpt["data_summary"]["training"]["images"] > 0
    assert ckpt["normalization"]["CT"]["kind"] == "hu_linear" and "*" in ckpt["normalization"]
    assert ckpt["config"]["train"]["steps"] == 6 and ckpt["config"]["model"]["name"] == "student"


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["distill", "--config", str(CONFIGS / "tiny_distill.json"), "--out", str(tmp_path / "d")])
    assert code == 2 and "--teacher" in capsys.readouterr().err
    code = main(["teacher", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "t")])
    assert code == 2 and "missing.json" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps: expected int, got 'abc'"),
    ("train.eval_every=0", "train.eval_every must be >= 1"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("data.ct_kernels=ramp", "data.ct_kernels: expected list[str], got 'ramp'"),
    ("loss.noise_balance=abc", "loss.noise_balance: expected float, got 'abc'"),
    ('data.dose_fractions=["a"]', "data.dose_fractions: expected list[float], got ['a']"),
    ("eval.max_images=-1", "eval.max_images must be >= 0"),
    ("model.kwargs.no_such_option=1", "model.kwargs for"),
])
def test_bad_config_values_are_one_line_errors(override, message, tmp_path, capsys):
    code = main(["teacher", "--config", str(CONFIGS / "tiny_teacher.json"), "--out", str(tmp_path / "t"),
                 "--set", "train.steps=2", "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


def test_a_fresh_run_into_an_earlier_runs_folder_says_so_and_starts_a_new_log(tmp_path, capsys):
    args = ["teacher", "--config", str(CONFIGS / "tiny_teacher.json"), "--out", str(tmp_path / "t"),
            "--set", "train.steps=2", "--set", "train.eval_every=2", "--set", "train.progress=false"]
    assert main(args) == 0
    first = (tmp_path / "t" / "log.jsonl").read_text().count('"event": "start"')
    capsys.readouterr()
    assert main(args) == 0
    assert "holds an earlier run; starting over" in capsys.readouterr().err
    assert first == 1 and (tmp_path / "t" / "log.jsonl").read_text().count('"event": "start"') == 1


def test_checkpoint_tool_mistakes_are_one_line_errors(tmp_path):
    import subprocess
    import sys

    for args in (["slim", str(tmp_path / "missing.pt"), str(tmp_path / "t.pt")], ["fixed", "no_such_model", "t.pt"]):
        done = subprocess.run([sys.executable, "-m", "trainer.checkpoint", *args], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
