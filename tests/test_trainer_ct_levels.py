"""python -m trainer.ct_levels: CT validation PSNR per dose level and kernel, both windows, and hann_low."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainer.checkpoint import save_checkpoint
from trainer.ct_levels import HANN_LOW, ct_level_scores, level_key, main
from trainer.error_regions import ct_validation_images
from trainer.models import create_model

TINY = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny_distill.json"


def test_level_key_names_simulated_doses_only():
    assert level_key(SimpleNamespace(kernel="hann", level=0.25)) == "hann@0.25"
    assert level_key(SimpleNamespace(kernel="shepp-logan", level=0.05)) == "shepp-logan@0.05"
    assert level_key(SimpleNamespace(kernel=None, level=float("nan"))) is None  # a paired real low-dose scan
    assert level_key(SimpleNamespace(kernel=None, level=0.03)) is None  # MR at 3 %


def test_identity_student_scores_the_input_and_lower_dose_scores_lower(tmp_path, capsys):
    config = json.loads(TINY.read_text())
    config["data"].update(dose_fractions=[0.1, 0.25, 0.5], eval_ct_kernels=["ramp", "hann"])
    path = tmp_path / "two_kernels.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(0)
    model = create_model("student", widths=[4, 8])  # a fresh student is the identity (zero residual)
    images = ct_validation_images(path)
    scores = ct_level_scores(model, images)
    levels = sorted({level_key(image) for image in images} - {None})
    assert set(HANN_LOW) <= set(levels)
    assert set(scores) == set(levels) | {f"lung {key}" for key in levels} | {"hann_low"}
    assert scores["hann_low"] == pytest.approx(np.mean([scores[key] for key in HANN_LOW]), abs=1e-3)
    for kernel in {key.split("@")[0] for key in levels}:
        doses = sorted(float(key.split("@")[1]) for key in levels if key.startswith(f"{kernel}@"))
        psnrs = [scores[f"{kernel}@{dose:g}"] for dose in doses]
        assert psnrs == sorted(psnrs) and psnrs[0] < psnrs[-1], kernel  # more dose, less noise
    checkpoint = tmp_path / "identity.pt"
    save_checkpoint(checkpoint, model)
    assert main([str(checkpoint), "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["hann_low"] == scores["hann_low"]


def test_real_scans_are_also_scored_alone():
    """``real ...`` keys average the scans that are not phantoms, so a rule can see them apart."""
    from dataclasses import replace

    images = ct_validation_images(TINY)
    first = images[0].name
    marked = [replace(image, name="offline:a-real-scan#0") if image.name == first else image for image in images]
    torch.manual_seed(0)
    model = create_model("student", widths=[4, 8])
    mixed, alone = ct_level_scores(model, marked), ct_level_scores(model, [i for i in marked if i.name.startswith("offline:")])
    real_keys = {key for key in mixed if key.startswith("real")}
    assert real_keys and {key[len("real "):] for key in real_keys if key != "real_hann_low"} == {
        key for key in alone if not key.startswith("real") and key != "hann_low"}
    for key in real_keys - {"real_hann_low"}:
        assert mixed[key] == alone[key[len("real "):]]
    if "real_hann_low" in mixed:
        assert mixed["real_hann_low"] == alone["hann_low"]
    assert not any(key.startswith("real") for key in ct_level_scores(model, images))  # phantoms only: no real keys
