"""Training over the whole noise range: CT doses and kernels, MR and X-ray levels, the
three-way split and the evaluation levels (issue 11; docs/DATA.md)."""

import numpy as np
import pytest

from trainer.data import DataConfig, build_heldout_set, build_training_set
from trainer.data import degrade
from trainer.data.phantoms import random_phantom
from trainer.data.split import split_of, split_value

SMALL = dict(sources=["phantom"], modalities=["CT"], phantom_count=2, phantom_size=64, heldout_phantoms=1,
             validation_phantoms=1, ct_angles=48, ct_noise_realizations=1, patch_size=32, patches_per_epoch=64,
             augment=False, noise_aug_prob=0.0, ct_hu_range=[-160, 240])


def test_three_way_split_by_hash_band_and_by_name():
    key = next(f"offline:x/{i}" for i in range(1000) if 0.3 <= split_value(f"offline:x/{i}") < 0.4)
    assert split_of(key, 0.3, 0.1) == "validation"
    assert split_of(key, 0.3, 0.0) == "train"  # no validation band: it trains
    assert split_of(key, 0.45, 0.1) == "test"
    assert split_of("validation:phantom:val-0", 0.3, 0.0) == "validation"
    assert split_of("heldout:phantom:x", 0.0, 0.0) == "test"
    assert split_of("train:phantom:x", 0.99, 0.0) == "train"


def test_validation_and_test_phantoms_are_separate_sets():
    cfg = DataConfig(**SMALL)
    validation = {i.name for i in build_heldout_set(cfg, "validation")}
    test = {i.name for i in build_heldout_set(cfg, "test")}
    assert validation == {"phantom:val-0"}
    assert test == {"phantom:shepp-logan", "phantom:heldout-0"}
    with pytest.raises(ValueError, match="split"):
        build_heldout_set(cfg, "train")


def test_eval_set_has_every_dose_and_kernel_with_true_noise_level():
    cfg = DataConfig(**{**SMALL, "dose_fractions": [0.05, 0.5], "ct_kernels": ["ramp"], "eval_ct_kernels": ["ramp", "hann"]})
    images = [i for i in build_heldout_set(cfg, "test") if i.name == "phantom:heldout-0"]
    assert sorted((i.level, i.kernel) for i in images) == [(0.05, "hann"), (0.05, "ramp"), (0.5, "hann"), (0.5, "ramp")]
    sigma = {(i.level, i.kernel): i.noise_sigma for i in images}
    # Ten times less dose: sqrt(10) times more noise; the smooth kernel is less noisy.
    assert 2.5 < sigma[(0.05, "ramp")] / sigma[(0.5, "ramp")] < 4.0
    assert sigma[(0.05, "hann")] < 0.7 * sigma[(0.05, "ramp")]
    for image in images:  # a phantom has no noise of its own: sigma is the inserted noise's RMS
        hu = image.clean * 400 - 160
        mask = degrade.soft_tissue_mask(hu)
        rms = np.sqrt(np.mean((image.degraded - image.clean)[mask].astype(np.float64) ** 2))
        assert image.noise_sigma == pytest.approx(rms, rel=1e-6)


def test_unit_noise_scales_to_the_exact_simulation_across_doses():
    hu = random_phantom(96, np.random.default_rng(3))
    sim = degrade.LowDoseCT(hu, 1.0, 60, 7e5)
    mask = degrade.soft_tissue_mask(hu)
    unit = sim.unit_noise(np.random.default_rng(1))
    for dose in (0.05, 0.5):
        exact = sim.noise(dose, np.random.default_rng(2))
        scaled = unit * degrade.dose_noise_scale(dose, sim.own_variance_fraction)
        assert scaled[mask].std() == pytest.approx(exact[mask].std(), rel=0.15)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel"):
        DataConfig(ct_kernels=["sharpest"])
    sim = degrade.LowDoseCT(np.zeros((32, 32), np.float32), 1.0, 16, 1e5)
    with pytest.raises(ValueError, match="kernel"):
        sim.noise(0.5, np.random.default_rng(0), kernel="b70f")


def patch_noise(cfg: DataConfig, count: int = 64) -> np.ndarray:
    dataset = build_training_set(cfg)
    return np.array([float((x - y).std()) for x, y in (dataset[i] for i in range(count))])


def test_ct_training_patches_span_the_dose_range():
    fixed = patch_noise(DataConfig(**{**SMALL, "dose_fractions": [0.25]}))
    ranged = patch_noise(DataConfig(**{**SMALL, "train_dose_range": [0.03, 0.7]}))
    # Fixed dose: the spread is the phantom's own variation; a 23x dose range widens it a lot.
    spread = lambda s: np.percentile(s, 95) / np.percentile(s, 5)  # noqa: E731
    assert spread(ranged) > 2.0 * spread(fixed)
    assert ranged.max() > fixed.max() and ranged.min() < fixed.min()


def test_doses_above_full_dose_train_phantoms_only():
    from runtime.normalization import fit_normalization
    from trainer.data.datasets import _ct_training_variants, spec_for
    from trainer.data.sources import SourceImage

    cfg = DataConfig(**{**SMALL, "train_dose_range": [0.03, 2.0]})
    hu = random_phantom(64, np.random.default_rng(0))
    ranges = {}
    for source in ("phantom", "offline"):  # a phantom is noiseless; an offline slice is a scan
        image = SourceImage(f"{source}:x", "CT", hu, 1.0, "g", source)
        (variant,) = _ct_training_variants(image, fit_normalization(hu, spec_for("CT", cfg)), cfg)
        ranges[source] = variant.levels
    assert ranges == {"phantom": (0.03, 2.0), "offline": (0.03, 1.0)}
    with pytest.raises(ValueError, match="train_dose_range"):
        DataConfig(train_dose_range=[0.03, 5.0])


def test_mr_training_sigma_is_drawn_from_the_range():
    from trainer.data.datasets import _PoolImage, _Variant, PatchDataset
    from runtime.normalization import NormalizationState

    clean = np.full((64, 64), 0.5, np.float32)
    pool = _PoolImage(clean, NormalizationState(0.0, 1.0), [_Variant("mr", None, "gaussian", (0.01, 0.1))], "MR")
    cfg = DataConfig(**{**SMALL, "modalities": ["MR"]})
    stds = [float((x - y).std()) for x, y in (PatchDataset([pool], cfg)[i] for i in range(64))]
    assert min(stds) < 0.02 and max(stds) > 0.06


def test_xray_quantum_noise_is_signal_dependent_and_falls_with_dose():
    rng = np.random.default_rng(0)
    open_field, behind_bone = np.zeros((128, 128), np.float32), np.ones((128, 128), np.float32)
    low_dose = degrade.xray_quantum_noise(open_field, 300, rng) - open_field
    high_dose = degrade.xray_quantum_noise(open_field, 3000, rng) - open_field
    bone = degrade.xray_quantum_noise(behind_bone, 300, rng) - behind_bone
    assert low_dose.std() == pytest.approx(1 / (3 * np.sqrt(300)), rel=0.1)
    assert low_dose.std() / high_dose.std() == pytest.approx(np.sqrt(10), rel=0.15)
    assert bone.std() > 3 * low_dose.std()  # e^(3/2) = 4.5 fewer-quanta noise behind bone
    # Values outside the attenuation clip keep their offset exactly (only the noise is added).
    far = np.full((64, 64), 3.0, np.float32)
    assert abs(float((degrade.xray_quantum_noise(far, 1000, rng) - far).mean())) < 0.05


def test_modality_weights_balance_training_patches():
    from trainer.data.datasets import _PoolImage, _image_probabilities
    from runtime.normalization import NormalizationState

    images = [_PoolImage(np.zeros((8, 8), np.float32), NormalizationState(0, 1), [], m) for m in ["CT"] * 8 + ["MR", "CR"]]
    p = _image_probabilities(images, {"CT": 0.6, "MR": 0.2, "DX": 0.2})
    assert p[:8].sum() == pytest.approx(0.6) and p[8] == pytest.approx(0.2) and p[9] == pytest.approx(0.2)
    assert _image_probabilities(images, None) is None
    with pytest.raises(ValueError, match="modality_weights"):
        _image_probabilities(images, {"US": 1.0})


def test_real_image_share_splits_each_modality_between_scans_and_phantoms():
    from trainer.data.datasets import _PoolImage, _image_probabilities
    from runtime.normalization import NormalizationState

    def pool(modality: str, real: bool) -> _PoolImage:
        return _PoolImage(np.zeros((8, 8), np.float32), NormalizationState(0, 1), [], modality, real=real)

    # CT: 2 real slices beside 8 phantoms; MR: phantoms only; X-ray: 1 real CR beside 3 DX phantoms.
    images = [pool("CT", True)] * 2 + [pool("CT", False)] * 8 + [pool("MR", False)] * 2 + [pool("CR", True)] + [pool("DX", False)] * 3
    p = _image_probabilities(images, {"CT": 0.6, "MR": 0.2, "CR": 0.2}, real_share=0.5)
    assert p[:2] == pytest.approx([0.15, 0.15]) and p[2:10] == pytest.approx([0.3 / 8] * 8)
    assert p[10:12] == pytest.approx([0.1, 0.1])  # no real MR: the share does not apply
    assert p[12] == pytest.approx(0.1) and p[13:] == pytest.approx([0.1 / 3] * 3)
    # Without modality weights each modality keeps its share of the images.
    p = _image_probabilities(images, None, real_share=0.5)
    assert p[:10].sum() == pytest.approx(10 / 16) and p[0] == pytest.approx(5 / 16 / 2)
    assert _image_probabilities(images, {"CT": 1.0}, real_share=None)[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="real_image_share"):
        DataConfig(real_image_share=1.5)


def test_legacy_scalar_mr_sigma_still_loads():
    assert DataConfig.from_dict({"mr_noise_sigma": 0.05}).mr_noise_sigmas == [0.05]
    with pytest.raises(ValueError, match="train_dose_range"):
        DataConfig(train_dose_range=[0.5, 0.1])
