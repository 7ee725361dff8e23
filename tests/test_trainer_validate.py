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

from trainer_fixtures import perturbed_noise_map_student

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


def test_runtime_normalization_feeds_mr_and_xray_as_runtime_enhance_does(tmp_path):
    """eval.runtime_normalization: the validation output equals the runtime pipeline's (normalized by a
    fit on the degraded image, told the noise measured there), which the reference's normalization is not."""
    import numpy as np

    from benchmarks.runners import open_runner
    from compiler.quality import evaluation_units, heldout_values
    from runtime.pipeline import enhance_values
    from trainer.data import normalization_table
    from trainer.train import enhance_heldout

    model = perturbed_noise_map_student()
    cfg = DataConfig(sources=["phantom"], modalities=["MR", "DX"], phantom_count=0, heldout_phantoms=0, phantom_size=64,
                     mr_phantoms=0, mr_validation_phantoms=1, xray_phantoms=0, xray_validation_phantoms=1,
                     mr_noise_sigmas=[0.08], xray_noise="quantum", xray_photons=[300.0], noise_map=True, augment=False)
    checkpoint = tmp_path / "noise_map.pt"
    save_checkpoint(checkpoint, model, normalization=normalization_table(cfg), modalities=cfg.modalities)
    backend = open_runner(str(checkpoint), 1).backend
    images = build_heldout_set(cfg, "validation")
    assert {image.modality for image in images} == {"MR", "DX"}
    model.eval()
    for image in images:
        deployed = evaluation_units(enhance_values(backend, heldout_values(image).degraded, image.modality), image)
        as_runtime = enhance_heldout(model, image, torch.device("cpu"), runtime_normalization=True)
        as_reference = enhance_heldout(model, image, torch.device("cpu"), runtime_normalization=False)
        np.testing.assert_allclose(as_runtime, deployed, atol=1e-4, err_msg=image.name)
        assert float(np.abs(as_reference - deployed).max()) > 1e-3, image.name  # the paths differ on noisy images
