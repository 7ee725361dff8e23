"""Smoke test of ``python -m benchmarks.quality`` on one small held-out MR image, plus the
region-of-interest choice and the baseline strength sweep it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import trainer.baselines as baselines
from benchmarks import markdown, quality, tuning
from benchmarks.crops import region_of_interest
from benchmarks.synthetic import save_conv_stack
from runtime.normalization import CT_DEFAULT, PERCENTILE_DEFAULT


def test_ct_region_of_interest_is_the_soft_tissue() -> None:
    hu = np.full((96, 96), -1000.0)  # air
    hu[50:80, 10:40] = 40.0  # a soft-tissue block
    clean = ((hu + 1024.0) / 4095.0).astype(np.float32)
    top, left = region_of_interest(clean, "CT", CT_DEFAULT, 30)
    assert (top, left) == (50, 10)


def test_other_modalities_pick_the_detailed_region() -> None:
    image = np.zeros((80, 80), dtype=np.float32)
    image[5:25, 50:70] = np.random.default_rng(0).random((20, 20))  # texture in one corner
    top, left = region_of_interest(image, "MR", PERCENTILE_DEFAULT, 20)
    assert abs(top - 5) <= 3 and abs(left - 50) <= 3


def test_run_baseline_passes_strength_and_sigma(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setitem(baselines.BASELINES, "nlm", lambda image, sigma, **options: calls.append((sigma, options)))
    monkeypatch.setitem(baselines.BASELINES, "wavelet", lambda image, sigma, **options: calls.append((sigma, options)))
    image = np.zeros((8, 8), dtype=np.float32)
    tuning.run_baseline("nlm", image, 1.6, 0.02)
    tuning.run_baseline("nlm", image)
    tuning.run_baseline("wavelet", image, 1.6)  # no strength parameter: the value is not passed
    assert calls == [(0.02, {"h_per_sigma": 1.6}), (None, {}), (None, {})]


@pytest.mark.slow
def test_quality_smoke_writes_json_and_png(tmp_path: Path) -> None:
    model = save_conv_stack(tmp_path / "tiny.fp32.onnx", channels=4, layers=2)
    out, grid = tmp_path / "quality.json", tmp_path / "crops.png"
    status = quality.main([str(model), "--sources", "offline", "--modalities", "MR", "--max-side", "96",
                           "--max-images", "1", "--threads", "1", "--crop", "48", "--out", str(out), "--grid", str(grid)])
    assert status == 0
    assert grid.stat().st_size > 1000
    record = json.loads(out.read_text())
    assert record["machine"]["cpu"] and record["libraries"]["scikit-image"]
    assert len(record["models"]["tiny.fp32.onnx"]["file"]["sha256"]) == 64
    methods = {row["method"] for row in record["summary"]}
    assert methods == {"input", "nlm", "tv", "wavelet", "tiny.fp32.onnx"}
    for row in record["summary"]:
        assert row["modality"] == "MR" and row["degradation"] and row["images"] == 1
        assert np.isfinite([row["psnr"], row["ssim"], row["fsim"]]).all()
    sweep = next(iter(record["baseline_tuning"].values()))
    assert sweep["nlm"]["best"]["psnr"] in tuning.SWEEPS["nlm"] and sweep["nlm"]["sigma"] == "estimated"
    assert not set(sweep["nlm"]["tuning_images"]) & {row["image"] for row in record["per_image"]}
    assert "| MR |" in markdown.quality_markdown(record)
