"""compiler.quality / `verify --heldout`: held-out images stay in modality values, each model
normalizes them by its own contract, and the PSNR equals what the CLI's outputs score."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from compiler import quality
from compiler.__main__ import main as compiler_main
from onnx_fixtures import write_tiny_onnx
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.enhance import main as enhance_main
from runtime.image_contract import modality_image
from runtime.normalization import CT_DEFAULT, NormalizationSpec, NormalizationState, normalize
from runtime_fixtures import pydicom_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (REPO / "models" / "medclear_student.fp32.onnx", REPO / "models" / "medclear_student.int8.onnx")
FULL_RANGE = NormalizationState(offset=-1024.0, scale=4095.0)  # the trainer's default CT normalization


def _ct_image(seed: int = 0):
    from trainer.data import HeldoutImage

    rng = np.random.default_rng(seed)
    clean_hu = rng.uniform(-100, 150, (40, 56)).astype(np.float32)
    degraded_hu = clean_hu + rng.normal(0, 20, clean_hu.shape).astype(np.float32)
    return HeldoutImage(f"ct{seed}", "CT", normalize(degraded_hu, FULL_RANGE), normalize(clean_hu, FULL_RANGE),
                        CT_DEFAULT, "ct_dose_0.25_ramp", state=FULL_RANGE)


def test_heldout_images_go_back_to_hu():
    image = _ct_image()
    pair = quality.heldout_values(image)
    np.testing.assert_allclose(pair.degraded, image.degraded * 4095.0 - 1024.0, atol=1e-3)
    assert pair.data_range == 4095.0 and pair.name == "ct0 ct_dose_0.25_ramp" and pair.modality == "CT"
    np.testing.assert_allclose(quality.evaluation_units(pair.clean, image), image.clean, atol=1e-6)
    with pytest.raises(ValueError, match="no normalization state"):
        quality.heldout_values(dataclasses.replace(image, state=None))


def test_each_model_normalizes_heldout_hu_by_its_own_contract(tmp_path, monkeypatch):
    """A model whose contract says -160..240 HU is fed (HU + 160) / 400, not the trainer's default."""
    window = NormalizationSpec(kind="hu_linear", hu_min=-160.0, hu_max=240.0)
    model = write_tiny_onnx(tmp_path / "m.fp32.onnx", normalization={"CT": window})
    fed = []
    real_infer = OnnxRuntimeBackend._infer
    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", lambda self, batch: fed.append(batch.copy()) or real_infer(self, batch))
    pair = quality.heldout_values(_ct_image())
    rows = quality.psnr_drop(model, model, [pair])
    assert rows[0].drop == 0.0 and np.isfinite(rows[0].psnr_fp32)
    expected = (pair.degraded + 160.0) / 400.0
    for batch in fed:
        np.testing.assert_allclose(batch[0, 0, :40, :56], expected, atol=1e-5)


def _heldout_as_dicom(folder: Path) -> tuple[list[quality.HeldoutPair], list[Path]]:
    """Small real held-out images (CT at two doses, MR), written as DICOM files; each pair's
    degraded image is what its file holds (stored integers), so both paths see the same input."""
    from trainer.data import DataConfig, build_heldout_set
    from trainer.data.dicom_out import degraded_dataset

    config = DataConfig(sources=["offline"], modalities=["CT", "MR"], dose_fractions=[0.1, 0.5],
                        mr_noise_sigmas=[0.05], heldout_max_side=64)
    images = build_heldout_set(config)
    chosen = [i for i in images if i.modality == "CT"][:2] + [i for i in images if i.modality == "MR"][:1]
    containers = {"CT": pydicom_file("CT_small.dcm"), "MR": pydicom_file("MR_small.dcm")}
    pairs, paths = [], []
    for index, image in enumerate(chosen):
        pair = quality.heldout_values(image)
        path = folder / f"heldout{index}.dcm"
        ds = degraded_dataset(pydicom.dcmread(containers[image.modality]), pair.degraded, "test")
        for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):  # every pixel is image
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
        values, _, padding = modality_image(pydicom.dcmread(path))
        assert padding is None
        pairs.append(dataclasses.replace(pair, degraded=values[0]))
        paths.append(path)
    assert {p.modality for p in pairs} == {"CT", "MR"}
    return pairs, paths


@pytest.mark.slow
def test_verify_heldout_reports_the_psnr_of_the_clis_outputs(tmp_path, monkeypatch, capsys):
    fp32, int8 = SHIPPED
    pairs, paths = _heldout_as_dicom(tmp_path)
    from_cli = {}
    for model in SHIPPED:
        out = tmp_path / model.name
        assert enhance_main([*map(str, paths), "-o", str(out), "--model", str(model), "--format", "npy", "-q"]) == 0
        from_cli[model] = [quality.psnr_vs_clean(np.load(out / f"{p.stem}.enhanced.npy")[0], pair)
                           for p, pair in zip(paths, pairs)]
    rows = quality.psnr_drop(fp32, int8, pairs)
    np.testing.assert_allclose([r.psnr_fp32 for r in rows], from_cli[fp32], rtol=0, atol=1e-6)
    np.testing.assert_allclose([r.psnr_int8 for r in rows], from_cli[int8], rtol=0, atol=1e-6)

    monkeypatch.setattr(quality, "heldout_pairs", lambda modalities, task: pairs if task == "denoise" else [])
    assert compiler_main(["verify", "--onnx", str(int8), "--reference", str(fp32), "--heldout"]) == 0
    printed = [tuple(map(float, m.groups())) for m in
               re.finditer(r"^  .+? (-?\d+\.\d{3}) +(-?\d+\.\d{3})  [+-]\d+\.\d{3}$", capsys.readouterr().out, re.M)]
    assert len(printed) == len(pairs)
    np.testing.assert_allclose(printed, np.column_stack([from_cli[fp32], from_cli[int8]]), atol=5e-4)
