"""benchmarks.dose_compare on a hand-made dose-curve record: margins over oracle NLM per cell, the
worst CT cell, the mean, and the guard on image-cells near oracle NLM."""

from __future__ import annotations

import json

import pytest

from benchmarks import dose_compare
from benchmarks.quality import summarize

# image -> degradation -> method -> (psnr_window, psnr_lung)
SCORES = {
    "a": {"ct_dose_0.5_hann": {"nlm_oracle": (30.0, 30.0), "ref": (30.2, 29.0), "cand": (30.0, 29.8)},
          "ct_dose_0.1_ramp": {"nlm_oracle": (25.0, 25.0), "ref": (27.0, 27.0), "cand": (26.0, 27.0)}},
    "b": {"ct_dose_0.5_hann": {"nlm_oracle": (32.0, 31.0), "ref": (32.4, 31.6), "cand": (32.5, 31.7)},
          "ct_dose_0.1_ramp": {"nlm_oracle": (26.0, 26.0), "ref": (28.0, 28.0), "cand": (28.0, 28.0)}},
}


def _record() -> dict:
    per_image = [{"image": image, "modality": "CT", "degradation": degradation,
                  "level": float(degradation.split("_")[2]), "kernel": degradation.split("_")[3],
                  "noise_sigma": 0.02, "noise": 8.0, "noise_unit": "HU", "method": method,
                  "metrics": {"psnr_window": soft, "psnr_lung": lung}}
                 for image, levels in SCORES.items() for degradation, methods in levels.items()
                 for method, (soft, lung) in methods.items()]
    per_image.append({"image": "m", "modality": "MR", "degradation": "mr_rician_0.02", "level": 0.02, "kernel": None,
                      "noise_sigma": 0.02, "noise": 2.0, "noise_unit": "%", "method": "nlm_oracle",
                      "metrics": {"psnr": 35.0}})
    per_image += [{**per_image[-1], "method": method, "metrics": {"psnr": value}} for method, value in
                  (("ref", 36.0), ("cand", 35.5))]
    return {"benchmark": "dose_curve", "split": "validation", "summary": summarize(per_image), "per_image": per_image}


def test_margins_worst_cell_and_mean() -> None:
    result = dose_compare.compare(_record(), "ref", ["cand"])
    ref, cand = result["models"]["ref"], result["models"]["cand"]
    # ref: hann soft (0.2 + 0.4) / 2 = 0.3, lung (-1.0 + 0.6) / 2 = -0.2; ramp 2.0 in both windows
    assert ref["cells"]["CT ct_dose_0.5_hann psnr_lung"] == pytest.approx(-0.2)
    assert ref["worst_ct_db"] == pytest.approx(-0.2) and ref["mean_ct_soft_db"] == pytest.approx((0.3 + 2.0) / 2)
    assert ref["cells"]["MR mr_rician_0.02 psnr"] == pytest.approx(1.0)
    # cand: hann lung (-0.2 + 0.7) / 2 = 0.25, hann soft 0.25, ramp soft (1.0 + 2.0) / 2 = 1.5
    assert cand["worst_ct_db"] == pytest.approx(0.25) and cand["mean_ct_soft_db"] == pytest.approx((0.25 + 1.5) / 2)
    change = result["candidates"]["cand"]
    assert change["worst_ct_gain_db"] == pytest.approx(0.45)
    assert change["mean_ct_soft_gain_db"] == pytest.approx(0.875 - 1.15)


def test_only_image_cells_near_nlm_are_guarded() -> None:
    change = dose_compare.compare(_record(), "ref", ["cand"])["candidates"]["cand"]
    # near (< 0.5 dB): a hann soft +0.2, a hann lung -1.0, b hann soft +0.4; b hann lung is +0.6, ramp +2.0
    assert change["near_cells"] == 3
    # a's ramp soft drops 1 dB but was 2 dB above NLM: not guarded; a hann soft +0.2 -> 0.0 is
    assert list(change["near_cells_lost"]) == ["a ct_dose_0.5_hann psnr_window"]
    assert change["near_cells_lost"]["a ct_dose_0.5_hann psnr_window"] == pytest.approx(
        {"reference_db": 0.2, "candidate_db": 0.0})
    loose = dose_compare.compare(_record(), "ref", ["cand"], tolerance_db=0.25)["candidates"]["cand"]
    assert loose["near_cells_lost"] == {}


def test_cli_prints_writes_and_refuses_an_unknown_label(tmp_path, capsys) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(_record()))
    assert dose_compare.main([str(path), "--reference", "ref", "--candidates", "cand", "--out",
                              str(tmp_path / "c.json")]) == 0
    printed = capsys.readouterr().out
    assert "validation split" in printed and "worst CT cell +0.45 dB" in printed
    assert json.loads((tmp_path / "c.json").read_text())["reference"] == "ref"
    assert dose_compare.main([str(path), "--reference", "ref", "--candidates", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_record_without_ct_against_nlm_or_of_another_benchmark_is_refused() -> None:
    record = _record()
    with pytest.raises(ValueError, match="not a dose-curve record"):
        dose_compare.compare({**record, "benchmark": "quality"}, "ref", ["cand"])
    mr_only = [row for row in record["summary"] if row["modality"] == "MR"]
    with pytest.raises(ValueError, match="no CT cell"):
        dose_compare.compare({**record, "summary": mr_only}, "ref", ["cand"])
    partial = [row for row in record["per_image"] if not (row["method"] == "cand" and row["image"] == "a")]
    with pytest.raises(ValueError, match="no score on"):
        dose_compare.compare({**record, "per_image": partial}, "ref", ["cand"])
