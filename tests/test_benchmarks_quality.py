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
from runtime.model_contract import ModelContract
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
    contract = ModelContract(size_multiple=1, model_name="tiny", modalities=("MR",))
    model = save_conv_stack(tmp_path / "tiny.fp32.onnx", channels=4, layers=2, contract=contract)
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


def test_models_get_heldout_hu_normalized_by_their_own_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held-out images normalized with the trainer's default (-1024..3071 HU) reach a model whose
    contract says -160..240 HU as (HU + 160) / 400; the output comes back in the test set's units."""
    from benchmarks.runners import open_runner
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.normalization import NormalizationSpec, NormalizationState, normalize
    from trainer.data import HeldoutImage

    window = NormalizationSpec(kind="hu_linear", hu_min=-160.0, hu_max=240.0)
    contract = ModelContract(size_multiple=1, model_name="windowed", normalization={"CT": window})
    runner = open_runner(str(save_conv_stack(tmp_path / "w.onnx", channels=4, layers=2, contract=contract)), 1)
    fed: list[np.ndarray] = []
    real_infer = OnnxRuntimeBackend._infer
    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", lambda self, batch: fed.append(batch.copy()) or real_infer(self, batch))
    state = NormalizationState(offset=-1024.0, scale=4095.0)
    hu = np.random.default_rng(0).normal(40.0, 25.0, (32, 40)).astype(np.float32)
    image = HeldoutImage("x", "CT", normalize(hu, state), normalize(hu, state), CT_DEFAULT, "ct_dose_0.25_ramp",
                         state=state)
    output = quality.enhance(runner, image)
    np.testing.assert_allclose(fed[0][0, 0], (hu + 160.0) / 400.0, atol=1e-5)
    expected_hu = real_infer(runner.backend, ((hu + 160.0) / 400.0)[None, None])[0, 0] * 400.0 - 160.0
    np.testing.assert_allclose(output, normalize(expected_hu, state), atol=1e-6)
    runner.close()


def test_the_teacher_runs_with_its_checkpoints_contract() -> None:
    from benchmarks.runners import open_runner

    teacher = Path(__file__).resolve().parents[1] / "models" / "medclear_teacher.pt"  # shipped in the repository
    runner = open_runner(str(teacher), 1)
    assert runner.kind == "pytorch" and runner.backend.contract.normalization_for("CT").hu_min == -160.0
    out = runner.backend.infer(np.zeros((1, 1, 32, 32), np.float32))
    assert out.shape == (1, 1, 32, 32)


def test_noise_map_models_get_the_heldout_images_level_in_onnx_and_in_pytorch(tmp_path: Path) -> None:
    """The dose-curve and quality runners feed a noise-map ONNX (and a noise-map student
    checkpoint in PyTorch) through the runtime's path: the image's level is its second channel."""
    from benchmarks.runners import open_runner
    from runtime.model_contract import NOISE_MAP
    from runtime.noise import normalized_noise_level
    from runtime.normalization import NormalizationSpec, NormalizationState, denormalize, normalize
    from runtime_fixtures import make_smoothing_model, reference_smoothing
    from trainer.checkpoint import save_checkpoint
    from trainer.data import HeldoutImage
    from trainer.models import create_model

    window = NormalizationSpec(kind="hu_linear", hu_min=-160.0, hu_max=240.0)
    contract = ModelContract(model_name="map", normalization={"CT": window}, noise_conditioning=NOISE_MAP)
    student = create_model("student", widths=[4, 8], input_windows=[[-0.5, 1.5], [-2.35, -0.25]], noise_map=True)
    save_checkpoint(tmp_path / "map.pt", student, normalization={"CT": window.to_dict()}, modalities=["CT"])
    runners = [open_runner(str(make_smoothing_model(tmp_path / "map.onnx", contract=contract)), 1),
               open_runner(str(tmp_path / "map.pt"), 1)]
    assert [r.backend.contract.input_channels for r in runners] == [2, 2]
    state = NormalizationState(offset=-1024.0, scale=4095.0)
    model_state = NormalizationState(offset=-160.0, scale=400.0)
    hu = np.random.default_rng(0).normal(40.0, 25.0, (64, 64)).astype(np.float32)
    image = HeldoutImage("x", "CT", normalize(hu, state), normalize(hu, state), CT_DEFAULT, "ct_dose_0.25_ramp",
                         state=state)
    fed = normalize(hu, model_state)
    level = normalized_noise_level(fed[None], [model_state], "CT")
    added = normalize(denormalize(quality.enhance(runners[0], image), state), model_state) - reference_smoothing(fed)
    np.testing.assert_allclose(added, level, atol=1e-4)
    assert quality.enhance(runners[1], image).shape == hu.shape
    for runner in runners:
        runner.close()


def test_a_named_model_file_that_is_missing_stops_before_any_tuning(tmp_path: Path, capsys) -> None:
    """Not skipped as a model this machine cannot run: a typo costs no tuning run and leaves no silent gap."""
    for argv in ([str(tmp_path / "typo.int8.onnx"), "--dose-curve"], ["--teacher", str(tmp_path / "teacher.pt")]):
        with pytest.raises(SystemExit) as stopped:
            quality.parse_args(argv)
        assert stopped.value.code == 2 and f"model file not found: {tmp_path}" in capsys.readouterr().err
