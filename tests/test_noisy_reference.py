"""benchmarks.noisy_reference: its references hold the noise asked for, nested under the input's,
a noiseless reference scores every method as the truth does, and the summary is each method's best."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import noisy_reference
from benchmarks.runners import open_runner
from trainer.baselines import NLM_ORACLE_H_PER_SIGMA


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("noisy_reference") / "record.json"
    assert noisy_reference.main(["--size", "128", "--body", "1", "--head", "1", "--own-noise", "10",
                                 "--strengths", "0.8", "1", "--threads", "1", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def phantom_rows(record: dict) -> list[dict]:
    return [row for row in record["rows"] if row["image"] != "sample"]


def test_the_reference_holds_the_noise_asked_for_nested_under_the_input(record):
    rows = phantom_rows(record)
    assert [row["image"] for row in rows] == ["body-0", "head-0"]
    for row in rows:
        assert row["own_noise_hu"] == pytest.approx(10.0, rel=0.15), row["image"]
        # Quarter dose of that scan: 1/0.25 - 1 = 3 times its variance added, and the input is a quarter-dose
        # scan of the truth (twice the full-dose noise), as the dose curve's inputs are.
        assert row["added_noise_hu"] == pytest.approx(np.sqrt(3) * row["own_noise_hu"], rel=0.2), row["image"]
        assert row["input_noise_hu"] == pytest.approx(2 * row["own_noise_hu"], rel=0.2), row["image"]
        truth, noisy = (row["psnr_window"]["vs_truth"][m] for m in ("model@1", "input"))
        assert truth > noisy + 3, row["image"]


def test_the_noisy_reference_scores_the_input_higher_than_the_truth_does(record):
    """The reference's noise is in the input: the input is closer to it than to the truth."""
    for row in phantom_rows(record):
        scores = row["psnr_window"]
        assert scores["vs_reference"]["input"] > scores["vs_truth"]["input"] + 1, row["image"]


def test_summary_is_the_best_of_each_method(record):
    for row in record["rows"]:
        for key, summary in row["summary"].items():
            scores = row["psnr_window"][key]
            nlm = {m: v for m, v in scores.items() if m.startswith("nlm@")}
            assert len(nlm) == len(NLM_ORACLE_H_PER_SIGMA) and summary["best_nlm"] == max(nlm.values())
            assert scores[f"nlm@{summary['best_nlm_h']:g}"] == summary["best_nlm"]
            assert summary["model_minus_nlm"] == pytest.approx(scores["model@1"] - max(nlm.values()))
            assert summary["best_model"] == max(scores[f"model@{s:g}"] for s in (0.8, 1.0))
            assert scores[f"model@{summary['best_model_strength']:g}"] == summary["best_model"]


def test_the_sample_is_scored_against_its_original_only(record):
    (sample,) = [row for row in record["rows"] if row["image"] == "sample"]
    assert set(sample["summary"]) == {"vs_reference"} and sample["own_noise_implied"]
    assert sample["added_noise_hu"] > 20  # quarter dose of a scan with ~20 HU of its own: three times its variance


def test_a_noiseless_reference_scores_every_method_as_the_truth_does():
    truth = noisy_reference.phantom("body", 0, 128)
    probe = noisy_reference.calibration_scan(truth)
    reference, noisy = noisy_reference.scans(probe, noisy_reference.soft_tissue_mask(truth), 10.0, 0.25, [0])
    runner = open_runner(noisy_reference.parse_args([]).model, 1)
    try:
        row = noisy_reference.scored(runner, noisy, {"a": truth, "b": truth.copy(), "noisy": reference}, [1.0])
    finally:
        runner.close()
    assert row["psnr_window"]["a"] == row["psnr_window"]["b"]
    assert row["psnr_window"]["noisy"]["input"] > row["psnr_window"]["a"]["input"]


@pytest.mark.parametrize("bad", [["--strengths", "0.8"], ["--dose", "1"], ["--own-noise", "0"], ["--head", "-1"],
                                 ["--body", "0", "--head", "0"], ["--size", "32"]])
def test_bad_settings_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        noisy_reference.parse_args(bad)
    assert stopped.value.code == 2 and "error:" in capsys.readouterr().err
