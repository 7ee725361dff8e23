"""The shipped default model on the shipped sample, end to end through the runtime's CLI.

The sample (samples/ct_quarter_dose.dcm) is the held-out real CT slice explicit_VR-UN.dcm
from pydicom-data at simulated quarter dose (scripts/make_sample.py); its full-dose original
is the reference. This checks the files a user gets, not a training-time copy: the FP32 and
INT8 ONNX models must improve the slice by at least 3 dB in the soft-tissue window, beat non-local
means at trainer.baselines' default strength on it (the tuned comparison is benchmarks.quality's,
in models/MODEL_CARD.md), and agree with each other within the issue's 0.1 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from runtime.enhance import main as enhance_main
from runtime.image_contract import modality_image
from trainer.baselines import nlm
from trainer.data.offline import offline_dicom_files
from trainer.metrics import SOFT_TISSUE_WINDOW, psnr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "ct_quarter_dose.dcm"
MODELS = ROOT / "models"
_LEVEL, _WIDTH = SOFT_TISSUE_WINDOW  # W400/L40, the issue's display-window convention
WINDOW = (_LEVEL - _WIDTH / 2, _LEVEL + _WIDTH / 2)


def window_psnr(hu: np.ndarray, reference_hu: np.ndarray) -> float:
    """PSNR in the soft-tissue window (both images clipped to it; data range 400 HU)."""
    return psnr(np.clip(hu, *WINDOW), np.clip(reference_hu, *WINDOW), WINDOW[1] - WINDOW[0])


def hu_of(path: Path) -> np.ndarray:
    return modality_image(pydicom.dcmread(path))[0][0].astype(np.float64)


@pytest.fixture(scope="module")
def reference_hu() -> np.ndarray:
    source = next(p for p in offline_dicom_files() if p.name == "explicit_VR-UN.dcm")
    return hu_of(source)


@pytest.fixture(scope="module")
def enhanced_hu(tmp_path_factory) -> dict[str, np.ndarray]:
    """HU of the sample enhanced by each shipped ONNX model (through the runtime CLI)."""
    scores = {}
    for precision in ("fp32", "int8"):
        model = MODELS / f"medclear_student.{precision}.onnx"
        out = tmp_path_factory.mktemp(precision)
        assert enhance_main([str(SAMPLE), "-o", str(out), "--model", str(model), "--threads", "2", "-q"]) == 0
        scores[precision] = hu_of(out / "ct_quarter_dose.enhanced.dcm")
    return scores


def test_sample_is_the_reference_at_quarter_dose(reference_hu):
    noisy = hu_of(SAMPLE)
    assert noisy.shape == reference_hu.shape
    assert 25.0 < window_psnr(noisy, reference_hu) < 40.0  # noisy, but the same slice


def test_shipped_model_improves_the_sample_and_beats_nlm(enhanced_hu, reference_hu):
    noisy = hu_of(SAMPLE)
    before = window_psnr(noisy, reference_hu)
    # NLM on the same normalization the model uses (HU over the soft-tissue window, unclipped).
    nlm_hu = nlm((noisy - WINDOW[0]) / _WIDTH) * _WIDTH + WINDOW[0]
    for precision, enhanced in enhanced_hu.items():
        after = window_psnr(enhanced, reference_hu)
        assert after - before >= 3.0, f"{precision}: {before:.2f} -> {after:.2f} dB"  # measured +3.5
        assert after > window_psnr(nlm_hu, reference_hu), precision


def test_int8_model_stays_within_0_1_db_of_fp32(enhanced_hu, reference_hu):
    fp32 = window_psnr(enhanced_hu["fp32"], reference_hu)
    int8 = window_psnr(enhanced_hu["int8"], reference_hu)
    assert int8 - fp32 >= -0.1, f"INT8 {int8:.2f} dB vs FP32 {fp32:.2f} dB"
