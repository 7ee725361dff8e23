"""runtime.pipeline, the one inference path: contract normalization, modality units in and out,
stopwatch stages, and that the CLI, verify, quality, e2e and the watcher all go through it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from runtime import enhance, pipeline
from runtime.backends import BackendError
from runtime.image_contract import AIR_HU, modality_image, normalize_frames
from runtime.model_contract import NOISE_MAP, ModelContract
from runtime.noise import normalized_noise_level
from runtime.normalization import NormalizationSpec
from runtime.tiling import TilePlan
from runtime_fixtures import make_smoothing_model, pydicom_file, reference_smoothing

REPO = Path(__file__).resolve().parents[1]
SOFT_TISSUE = NormalizationSpec(kind="hu_linear", hu_min=-160.0, hu_max=240.0)  # the shipped model's CT window


class Recording:
    """A backend that records every batch the model is given (duck-typed like Backend)."""

    def __init__(self, backend) -> None:
        self.backend, self.batches = backend, []
        self.contract, self.constraints = backend.contract, backend.constraints

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(np.array(batch))
        return self.backend.infer(batch)


@pytest.fixture()
def ct_model(tmp_path):
    contract = ModelContract(modalities=("CT", "MR"), model_name="soft-tissue",
                             normalization={"CT": SOFT_TISSUE, "*": NormalizationSpec(kind="percentile")})
    with pipeline.open_model(make_smoothing_model(tmp_path / "ct.onnx", contract=contract)) as backend:
        yield backend


@pytest.fixture()
def map_model(tmp_path):
    """The smoothing model as a noise-map model: its output is the smoothed image plus the map."""
    contract = ModelContract(modalities=("CT", "MR"), model_name="soft-tissue-map", noise_conditioning=NOISE_MAP,
                             normalization={"CT": SOFT_TISSUE, "*": NormalizationSpec(kind="percentile")})
    with pipeline.open_model(make_smoothing_model(tmp_path / "map.onnx", contract=contract)) as backend:
        yield backend


def test_the_model_is_fed_its_own_contract_and_values_come_back_in_hu(ct_model):
    hu = np.random.default_rng(0).normal(40.0, 30.0, (64, 48)).astype(np.float32)
    recording = Recording(ct_model)
    out = pipeline.enhance_values(recording, hu, "CT")
    (batch,) = recording.batches
    np.testing.assert_allclose(batch[0, 0, :64, :48], (hu + 160.0) / 400.0, atol=1e-6)  # not (hu + 1024) / 4095
    expected = ct_model.infer(((hu + 160.0) / 400.0)[None, None])[0, 0] * 400.0 - 160.0
    assert out.shape == hu.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_values_path_equals_the_cli_on_a_dicom_file(ct_model, tmp_path):
    source = shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm")
    assert enhance.main([str(source), "-o", str(tmp_path / "out"), "--model", str(ct_model.model_path),
                         "--format", "npy", "-q"]) == 0
    from_cli = np.load(tmp_path / "out" / "ct.enhanced.npy")
    values, _, padding = modality_image(pydicom.dcmread(source))
    np.testing.assert_array_equal(pipeline.enhance_values(ct_model, values, "CT", padding=padding), from_cli)
    result = pipeline.enhance_dataset(ct_model, pydicom.dcmread(source))
    np.testing.assert_array_equal(result.values(), from_cli)


def test_stopwatch_sees_each_stage_once(ct_model):
    seen = []

    class Watch:
        def __call__(self, stage):
            seen.append(stage)
            return self

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    pipeline.enhance_values(ct_model, np.zeros((2, 16, 16), np.float32), "CT", stopwatch=Watch())
    assert seen == ["prepare", "infer", "restore"]


def test_strength_zero_returns_the_input_without_running_the_model(ct_model):
    hu = np.linspace(-1000, 1000, 16 * 24, dtype=np.float32).reshape(16, 24)
    recording = Recording(ct_model)
    np.testing.assert_allclose(pipeline.enhance_values(recording, hu, "CT", strength=0.0), hu, atol=1e-3)
    assert recording.batches == []


def test_padding_is_ignored_by_percentile_fitting_and_kept(ct_model):
    mr = np.random.default_rng(1).uniform(100, 200, (32, 32)).astype(np.float32)
    padding = np.zeros(mr.shape, bool)
    padding[:, :4] = True
    mr[padding] = -5000.0
    recording = Recording(ct_model)
    out = pipeline.enhance_values(recording, mr, "MR", padding=padding)
    assert np.all(out[padding] == -5000.0)
    inside = recording.batches[0][0, 0][~padding]
    assert -0.1 < inside.min() and inside.max() < 1.1  # the -5000 padding did not set the scale


def test_ct_out_of_field_pixels_are_fed_as_air_and_come_back_unchanged(ct_model, tmp_path):
    """A scanner's fill outside its reconstruction circle (-3024 HU here, not declared as padding)
    reaches the model as air, on the values path and through the CLI, and is written back as it was."""
    hu = np.random.default_rng(2).normal(40.0, 20.0, (48, 48)).astype(np.float32)
    yy, xx = np.mgrid[:48, :48] - 23.5
    outside = yy**2 + xx**2 > 22.0**2
    hu[outside] = -3024.0
    recording = Recording(ct_model)
    out = pipeline.enhance_values(recording, hu, "CT")
    fed = recording.batches[0][0, 0, :48, :48]
    np.testing.assert_allclose(fed[outside], (AIR_HU + 160.0) / 400.0, atol=1e-6)
    assert np.all(out[outside] == -3024.0)
    assert fed[~outside].min() > (AIR_HU + 160.0) / 400.0  # the disc itself is not touched

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    stored = ds.pixel_array.copy()
    stored[:8, :8] = int(round((-3024.0 - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)))
    ds.PixelData = stored.tobytes()
    source = tmp_path / "fov.dcm"
    ds.save_as(source)
    assert enhance.main([str(source), "-o", str(tmp_path / "out"), "--model", str(ct_model.model_path), "-q"]) == 0
    written = pydicom.dcmread(tmp_path / "out" / "fov.enhanced.dcm").pixel_array
    np.testing.assert_array_equal(written[:8, :8], stored[:8, :8])
    assert enhance.main([str(source), "-o", str(tmp_path / "npy"), "--model", str(ct_model.model_path),
                         "--format", "npy", "-q"]) == 0
    from_cli = np.load(tmp_path / "npy" / "fov.enhanced.npy")
    values, _, padding = modality_image(pydicom.dcmread(source))
    np.testing.assert_array_equal(pipeline.enhance_values(ct_model, values, "CT", padding=padding), from_cli)
    np.testing.assert_array_equal(pipeline.enhance_dataset(ct_model, pydicom.dcmread(source)).values(), from_cli)
    assert np.all(from_cli[0, :8, :8] == -3024.0)


def test_uncovered_modality_and_bad_shapes_are_clear_errors(tmp_path, ct_model):
    with pytest.raises(pipeline.ModalityError, match="modality DX is not one the model soft-tissue"):
        pipeline.enhance_values(ct_model, np.zeros((8, 8)), "DX")
    with pytest.raises(ValueError, match="values must be"):
        pipeline.enhance_values(ct_model, np.zeros(8), "CT")


def test_a_model_whose_output_contradicts_its_scale_and_missing_files_are_clear_errors(tmp_path):
    # Claims x2 super-resolution (tests/test_runtime_sr.py runs real SR models) but keeps the shape.
    sr = make_smoothing_model(tmp_path / "sr.onnx", contract=ModelContract(scale=2, modalities=("*",)))
    with pipeline.open_model(sr) as backend:
        assert pipeline.tile_plan(backend).scale == 2
        with pytest.raises(ValueError, match=r"model returned shape \[1, 1, 16, 16\] for input .*scale is 2"):
            pipeline.enhance_values(backend, np.zeros((16, 16)), "CT")
    with pytest.raises(BackendError, match="model file not found"):
        pipeline.open_model(tmp_path / "none.onnx")


def test_tile_plan_stays_within_the_models_limits(ct_model):
    plan = pipeline.tile_plan(ct_model, tile=0, batch=2)
    assert (plan.tile, plan.batch, plan.size_multiple) == (0, 2, 8)


# Every entry point besides the CLI, and the names they must use: the pipeline, not a second
# normalization, session or patched stage.
ENTRY_POINTS = ["compiler/verify.py", "compiler/quality.py", "benchmarks/quality.py", "benchmarks/e2e.py",
                "benchmarks/runners.py", "jetson/watch_folder.py"]
SECOND_PATHS = re.compile(r"fit_normalization|CT_DEFAULT|InferenceSession|cpu_session|mock\.patch|OnnxrtRunner|"
                          r"TrtRunner|EngineFromBytes|select_backend|DataConfig\(\)\.ct_hu_range")


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_points_use_the_one_inference_path(path):
    source = (REPO / path).read_text()
    assert "runtime.pipeline" in source, f"{path} does not use runtime.pipeline"
    assert not SECOND_PATHS.findall(source), f"{path} has a second inference path: {SECOND_PATHS.findall(source)}"


def _soft_tissue(sigma_hu: float, shape=(96, 80), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(40.0, sigma_hu, shape).astype(np.float32)


@pytest.mark.parametrize("sigma_hu", [15.0, 30.0])
def test_a_noise_map_model_is_fed_the_images_measured_level_as_a_constant_second_channel(map_model, sigma_hu):
    hu = _soft_tissue(sigma_hu)
    recording = Recording(map_model)
    out = pipeline.enhance_values(recording, hu, "CT")
    normalized, states = normalize_frames(hu[None], SOFT_TISSUE)
    level = normalized_noise_level(normalized, states, "CT")
    assert 0.8 * sigma_hu / 400.0 < level < 1.2 * sigma_hu / 400.0  # the image's noise in the model's units
    (batch,) = recording.batches
    assert batch.shape == (1, 2, 96, 80) and np.all(batch[0, 1] == np.float32(level))
    np.testing.assert_allclose(batch[0, 0], normalized[0], atol=1e-6)
    # The model adds its map to the smoothed image: what it added is the level it was given.
    np.testing.assert_allclose((out + 160.0) / 400.0 - reference_smoothing(normalized[0]), level, atol=1e-5)


def test_a_noise_map_model_tiled_equals_whole_image(map_model):
    hu = _soft_tissue(20.0, shape=(150, 130), seed=3)
    whole = pipeline.enhance_values(map_model, hu, "CT", plan=pipeline.tile_plan(map_model, tile=0))
    recording = Recording(map_model)
    plan = TilePlan(size_multiple=8, tile=64, overlap=16, margin=4, batch=3)
    tiled = pipeline.enhance_values(recording, hu, "CT", plan=plan)
    assert len(recording.batches) > 2 and len({float(b[0, 1, 0, 0]) for b in recording.batches}) == 1
    np.testing.assert_allclose(tiled, whole, atol=1e-3)  # HU: 400 x the normalized 2.5e-6


def test_cli_and_pipeline_feed_a_noise_map_model_on_a_ct_file(map_model, tmp_path, capsys):
    source = shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct.dcm")
    model = str(map_model.model_path)
    assert enhance.main([str(source), "-o", str(tmp_path / "npy"), "--model", model, "--format", "npy", "-q"]) == 0
    result = pipeline.enhance_dataset(map_model, pydicom.dcmread(source))
    np.testing.assert_array_equal(result.values(), np.load(tmp_path / "npy" / "ct.enhanced.npy"))
    prepared = result.prepared
    level = normalized_noise_level(prepared.normalized, prepared.states, "CT", prepared.padding)
    assert level > 0.01
    np.testing.assert_allclose(result.enhanced[0] - reference_smoothing(prepared.normalized[0]), level, atol=1e-5)
    assert enhance.main([str(source), "-o", str(tmp_path / "dcm"), "--model", model]) == 0
    derived = pydicom.dcmread(tmp_path / "dcm" / "ct.enhanced.dcm")
    assert "noise ~" in derived.DerivationDescription and "1 done, 0 skipped, 0 failed" in capsys.readouterr().out


def test_backend_check_after_a_failure_probes_a_noise_map_model_with_two_channels(map_model):
    enhance.check_backend(map_model, pipeline.tile_plan(map_model), enhance.InferenceError("one bad file"))


def test_a_noise_map_image_is_measured_once_for_the_log_and_the_model(map_model, monkeypatch):
    from runtime import noise

    calls = []
    real = noise.estimate_noise
    monkeypatch.setattr(noise, "estimate_noise", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = pipeline.enhance_dataset(map_model, pydicom.dcmread(pydicom_file("CT_small.dcm")))
    assert len(calls) == 1  # one frame: one estimate serves the Derivation Description and the map
    prepared = result.prepared
    hu = noise.denormalize(prepared.normalized[0], prepared.states[0])
    assert result.noise == noise.frame_noise(hu, "CT", prepared.padding[0] if prepared.padding is not None else None)
