"""python -m trainer.validate: checkpoints scored on one config's validation split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import save_checkpoint
from trainer.config import load_config
from trainer.data import DataConfig, build_heldout_set
from trainer.models import create_model
from trainer.validate import main, validation_scores

TINY = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny_distill.json"


def student_checkpoint(path: Path, perturb: float) -> Path:
    """A tiny student (a fresh one is the identity: its residual starts at zero), perturbed."""
    torch.manual_seed(0)
    model = create_model("student", widths=[4, 8])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(perturb * torch.randn_like(parameter))
    save_checkpoint(path, model)
    return path


def test_each_checkpoint_is_scored_on_the_same_validation_images(tmp_path, capsys):
    first, second = student_checkpoint(tmp_path / "a.pt", 0.0), student_checkpoint(tmp_path / "b.pt", 0.1)
    scores = validation_scores([first, second], TINY)
    assert [s["checkpoint"] for s in scores] == [str(first), str(second)]
    assert scores[0]["psnr_input"] == scores[1]["psnr_input"]  # the same degraded images
    assert scores[0]["psnr"] != scores[1]["psnr"]  # different models, different scores
    assert "psnr_CT" in scores[0]
    assert main([str(first), "--config", str(TINY)]) == 0
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["psnr"] == pytest.approx(scores[0]["psnr"])


def test_the_whole_split_is_scored_whatever_the_configs_eval_max_images(tmp_path):
    config = json.loads(TINY.read_text())
    config["data"]["validation_phantoms"], config["eval"]["max_images"] = 3, 1
    path = tmp_path / "three.json"
    path.write_text(json.dumps(config))
    every = build_heldout_set(DataConfig.from_dict(load_config(path).data), "validation")
    checkpoint = student_checkpoint(tmp_path / "a.pt", 0.0)
    assert validation_scores([checkpoint], path)[0]["images"] == len(every) >= 3
    assert validation_scores([checkpoint], path, max_images=2)[0]["images"] == 2


def test_missing_files_are_named(tmp_path, capsys):
    assert main([str(tmp_path / "none.pt"), "--config", str(TINY)]) == 2
    assert "none.pt" in capsys.readouterr().err
