"""trainer.rule_measures: the dark-band error and MR noise-level sensitivity of a deployed model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.runners import open_runner
from trainer.checkpoint import save_checkpoint
from trainer.data import DataConfig, build_heldout_set, normalization_table
from trainer.models import create_model
from trainer.rule_measures import ToldLevelBackend, dark_band, is_unsaturated_radiograph, mr_level_sensitivity

from trainer_fixtures import perturbed_noise_map_student


def test_told_level_backend_scales_only_the_noise_level_channel():
    seen = []
    backend = SimpleNamespace(contract="c", constraints="k", infer=lambda batch: seen.append(batch) or batch[:, :1])
    batch = np.stack([np.full((1, 4, 4), 0.5), np.full((1, 4, 4), 0.02)], axis=1).astype(np.float32)
    ToldLevelBackend(backend, 1.25).infer(batch)
    np.testing.assert_array_equal(seen[0][:, 0], batch[:, 0])
    np.testing.assert_allclose(seen[0][:, 1], 0.025)
    assert batch[0, 1, 0, 0] == np.float32(0.02)  # the caller's batch is left alone


@pytest.fixture(scope="module")
def noise_map_model(tmp_path_factory):
    """A perturbed tiny noise-map student as a runtime backend, and a small MR + DX validation split."""
    model = perturbed_noise_map_student()
    cfg = DataConfig(sources=["phantom"], modalities=["MR", "DX"], phantom_count=0, heldout_phantoms=0, phantom_size=64,
                     mr_phantoms=0, mr_validation_phantoms=1, xray_phantoms=0, xray_validation_phantoms=2,
                     mr_noise_sigmas=[0.02, 0.08], xray_noise="quantum", xray_photons=[300.0, 3000.0],
                     noise_map=True, augment=False)
    checkpoint = tmp_path_factory.mktemp("rule") / "noise_map.pt"
    save_checkpoint(checkpoint, model, normalization=normalization_table(cfg), modalities=cfg.modalities)
    return open_runner(str(checkpoint), 1).backend, build_heldout_set(cfg, "validation")


def test_dark_band_uses_the_unsaturated_radiographs_at_300_quanta(noise_map_model):
    backend, images = noise_map_model
    chosen = [im for im in images if is_unsaturated_radiograph(im) and im.level == 300.0]
    assert [im.name for im in chosen] == ["phantom:xray-val-1"]  # val-0 saturates; 3000 quanta not counted
    result = dark_band(backend, images)
    assert result["images"] == 1 and np.isfinite(result["mse"]) and result["mse"] > 0
    with pytest.raises(ValueError, match="300 quanta"):
        dark_band(backend, [im for im in images if im.modality == "MR"])


def test_mr_level_sensitivity_moves_when_the_model_is_told_another_level(noise_map_model):
    backend, images = noise_map_model
    result = mr_level_sensitivity(backend, images, factors=(0.5, 2.0))
    assert set(result) == {"MR@0.02", "MR@0.08", "worst_mr_level_loss_db"}
    for level in ("MR@0.02", "MR@0.08"):
        changes = result[level]["loss_db_when_told"]
        assert set(changes) == {"0.5", "2"}
        assert changes["0.5"] != 0.0 and changes["2"] != 0.0  # the level channel reaches the output
    assert result["worst_mr_level_loss_db"] == min(
        v for level in ("MR@0.02", "MR@0.08") for v in result[level]["loss_db_when_told"].values())
