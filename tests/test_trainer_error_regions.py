"""python -m trainer.error_regions: a CT denoiser's error split by where it lies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_trainer_validate import TINY, student_checkpoint

from trainer.error_regions import main, region_masks


def test_regions_partition_the_window_pixels():
    clean = np.full((64, 64), 0.5)  # soft tissue, normalized
    clean[:, 48:] = 3.0  # bone, above the window
    clean[20:30, 10:20] += 0.1  # a lesion 40 HU brighter (at 400 HU per unit)
    masks = region_masks(clean, hu_per_unit=400.0)
    inside = (clean > 0) & (clean < 1)
    total = sum(mask.astype(int) for mask in masks.values())
    assert np.array_equal(total, inside.astype(int))  # disjoint, and together every window pixel
    assert masks["window_edge"][:, 44:48].all() and not masks["window_edge"][:, :43].any()
    assert masks["tissue_edge"][19:31, 9:21].any() and not masks["tissue_edge"][40:, :40].any()
    assert masks["flat"][40:, :40].all()


def test_identity_model_keeps_the_reference_and_a_perturbed_one_changes_it(tmp_path, capsys):
    fresh, perturbed = student_checkpoint(tmp_path / "a.pt", 0.0), student_checkpoint(tmp_path / "b.pt", 0.1)
    assert main([str(fresh), str(perturbed), "--config", str(TINY)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_model = {path: [r for r in rows if r["checkpoint"] == str(path)] for path in (fresh, perturbed)}
    assert len(by_model[fresh]) == len(by_model[perturbed]) > 0
    for row in by_model[fresh]:  # a fresh student's residual is zero: output = input, identity = reference
        for region, rms in row["input"].items():
            assert rms is None or abs(row["output"][region] - rms) < 1e-3
            assert rms is None or row["identity"][region] < 1e-3
    assert any(value and value > 0.01 for row in by_model[perturbed] for value in row["identity"].values())


def test_no_matching_level_and_missing_files_are_errors(tmp_path, capsys):
    fresh = student_checkpoint(tmp_path / "a.pt", 0.0)
    assert main([str(fresh), "--config", str(TINY), "--degradation", "mr_rician_0.01"]) == 2
    assert "no CT validation image-levels" in capsys.readouterr().err
    assert main([str(tmp_path / "none.pt"), "--config", str(TINY)]) == 2
    assert "none.pt" in capsys.readouterr().err
