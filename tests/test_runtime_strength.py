"""--strength: residual blending (0 = input back, 1 = model, >1 = stronger), its CLI and its report."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from runtime_fixtures import make_smoothing_model, pydicom_file, run_cli

from runtime import enhance
from runtime.derived import Derivation
from runtime.image_contract import prepare
from runtime.normalization import CT_DEFAULT
from runtime.strength import MAX_STRENGTH, apply_strength, check_strength
from runtime.tiling import TilePlan


@pytest.fixture(scope="module")
def ct_runs(tmp_path_factory):
    """CT_small enhanced at strengths 0, 1 and 2: {strength: (exit code, stderr, output dataset)}."""
    root = tmp_path_factory.mktemp("strength")
    model = make_smoothing_model(root / "model.onnx")
    source = shutil.copy(pydicom_file("CT_small.dcm"), root / "CT_small.dcm")
    runs = {}
    for strength in ("0", "1", "2"):
        result = run_cli(str(source), "-o", str(root / strength), "--model", str(model), "--strength", strength)
        output = root / strength / "CT_small.enhanced.dcm"
        runs[strength] = (result.returncode, result.stderr, pydicom.dcmread(output) if output.exists() else None)
    return pydicom.dcmread(source), runs


def _hu(ds) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_apply_strength_blends_the_residual_exactly_at_0_and_1():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 0.2, (2, 33, 17)).astype(np.float32)
    y = (x + rng.normal(0, 0.01, x.shape)).astype(np.float32)
    np.testing.assert_array_equal(apply_strength(x, y, 0), x)
    np.testing.assert_array_equal(apply_strength(x, y, 1), y)
    np.testing.assert_allclose(apply_strength(x, y, 2.5), x + 2.5 * (y - x), atol=1e-6)
    assert apply_strength(x, y, 0.5).dtype == np.float32


@pytest.mark.parametrize("bad", [-0.1, MAX_STRENGTH + 0.01, float("nan"), float("inf")])
def test_check_strength_refuses_negative_and_absurd_values(bad):
    with pytest.raises(ValueError, match="strength must be between 0 and 4"):
        check_strength(bad)
    assert check_strength(0) == 0.0 and check_strength(MAX_STRENGTH) == MAX_STRENGTH
    assert str(check_strength(-0.0)) == "0.0"  # not "-0" in the log line and the DICOM


@pytest.mark.parametrize("bad", ["-1", "4.5", "nan", "high"])
def test_cli_refuses_bad_strength_with_a_usage_error(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        enhance.main([str(tmp_path), "-o", str(tmp_path / "out"), "--strength", bad])
    assert stopped.value.code == enhance.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("medclear: error: argument --strength:") and err.count("\n") == 1  # one line
    assert not (tmp_path / "out").exists()


def test_help_explains_strength():
    result = run_cli("--help")
    assert result.returncode == 0
    for phrase in ("--strength S", "0 = off", "1 = the model's output", "Low/Medium/High", "noise"):
        assert phrase in result.stdout, phrase


def test_strength_zero_gives_the_stored_pixels_back_without_running_the_model():
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    prepared = prepare(ds, CT_DEFAULT)

    def model_must_not_run(batch):
        raise AssertionError("the model ran at strength 0")

    out = enhance.enhance_prepared(prepared, model_must_not_run, TilePlan(), 0)
    np.testing.assert_array_equal(out, prepared.normalized)
    assert out is not prepared.normalized


def test_cli_strength_0_1_2_end_to_end(ct_runs):
    source, runs = ct_runs
    assert all(code == 0 for code, _, _ in runs.values()), {k: v[1] for k, v in runs.items()}
    np.testing.assert_array_equal(runs["0"][2].pixel_array, source.pixel_array)
    before, once, twice = _hu(source), _hu(runs["1"][2]), _hu(runs["2"][2])
    assert np.abs(once - before).max() > 10  # strength 1 changed the image
    assert np.abs((twice - before) - 2 * (once - before)).max() <= 2  # twice the change, up to rounding


def test_each_file_reports_noise_and_strength_in_the_log_and_the_derivation(ct_runs):
    _, runs = ct_runs
    for strength, (_, stderr, output) in runs.items():
        lines = [line for line in stderr.splitlines() if "CT_small.dcm" in line]
        assert len(lines) == 1, stderr
        assert lines[0].startswith("medclear: enhanced ") and "estimated input noise ~" in lines[0]
        facts = lines[0].split(": ", 2)[2]
        assert facts.endswith(f" HU; strength {strength}"), facts
        assert output.DerivationDescription.endswith(facts)
        assert output.DerivationDescription.startswith("Denoised by medclear")


def test_derivation_description_stays_within_its_vr():
    derivation = Derivation("Denoised by x", "v", "m", "id", parameters="p" * 2000)
    assert len(derivation.derivation_description()) == 1024
    assert Derivation("Denoised by x", "v", "m", "id").derivation_description() == "Denoised by x"
