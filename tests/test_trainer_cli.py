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
