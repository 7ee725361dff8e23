"""benchmarks.strength_sweep: the blend it scores is the runtime's --strength, and its best is a real maximum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import strength_sweep
from trainer.metrics import image_quality

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "medclear_student.int8.onnx"
HEADS_CONFIG = str(ROOT / "trainer" / "configs" / "default_qat_validation_heads.json")  # validation + head phantoms


def test_sweep_scores_the_input_at_strength_0_and_finds_the_best(tmp_path):
    out = tmp_path / "sweep.json"
    assert strength_sweep.main([str(MODEL), "--modalities", "MR", "--max-images", "1", "--threads", "1",
                                "--strengths", "0", "0.5", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    image = strength_sweep.images_of("validation", ["MR"])[0]
    assert row["image"] == image.name and record["settings"]["modalities"] == ["MR"]
    scores = row["scores"]["psnr"]
    assert scores["0"] == pytest.approx(image_quality(image.degraded, image.clean, "MR", image.spec)["psnr"], abs=1e-6)
    assert scores["1"] > scores["0"] + 3  # the model denoises this MR phantom
    best = row["best"]["psnr"]
    assert scores[f"{best['strength']:g}"] == max(scores.values())
    assert best["gain_db"] == pytest.approx(max(scores.values()) - scores["1"])
    assert row["fine_noise"]["output"] < row["fine_noise"]["input"]


def test_strengths_must_include_1_and_the_model_must_exist(tmp_path, capsys):
    with pytest.raises(SystemExit):
        strength_sweep.parse_args([str(MODEL), "--strengths", "0.5", "0.8"])
    missing = tmp_path / "typo.onnx"
    with pytest.raises(SystemExit) as stopped:
        strength_sweep.parse_args([str(missing)])
    assert stopped.value.code == 2 and f"model file not found: {missing}" in capsys.readouterr().err


def test_data_from_chooses_the_split_and_a_missing_config_is_refused(tmp_path, capsys):
    """--data-from defines the images as the dose curve's does: the heads config adds validation head phantoms."""
    names = {image.name for image in strength_sweep.images_of("validation", ["CT"], HEADS_CONFIG)}
    assert {"phantom:head-val-0", "phantom:head-val-2"} <= names
    assert not any("head-val" in image.name for image in strength_sweep.images_of("validation", ["CT"]))
    missing = tmp_path / "typo.json"
    with pytest.raises(SystemExit) as stopped:
        strength_sweep.parse_args([str(MODEL), "--data-from", str(missing)])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and str(missing) in error and "no such file" in error


def test_main_passes_data_from_to_the_split_and_the_record(tmp_path, monkeypatch):
    asked, real_images_of = [], strength_sweep.images_of

    def one_head_image(split, modalities, data_from=None):
        asked.append((split, modalities, data_from))
        return [image for image in real_images_of(split, modalities, data_from) if image.name == "phantom:head-val-0"]

    monkeypatch.setattr(strength_sweep, "images_of", one_head_image)
    out = tmp_path / "sweep.json"
    assert strength_sweep.main([str(MODEL), "--data-from", HEADS_CONFIG, "--modalities", "CT", "--threads", "1",
                                "--max-images", "1", "--strengths", "0.8", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert asked == [("validation", ["CT"], HEADS_CONFIG)] and record["settings"]["data_from"] == HEADS_CONFIG
    assert [row["image"] for row in record["rows"]] == ["phantom:head-val-0"]
