"""The shipped default model end to end through the runtime's CLI, across doses and modalities.

Each case is enhanced by the shipped denoiser a run without --model gives its modality (MR: the
MR denoiser; the rest: the default model), and a last test checks that such a run routes so.
Cases (all from the test split, never seen in training or model selection): the shipped sample
(samples/ct_quarter_dose.dcm, explicit_VR-UN at simulated quarter dose, reference its full-dose
original), the head CT J2K_pixelrep_mismatch at 5 % and 50 % dose, the MR
MR-SIEMENS-DICOM-WithOverlays with 4 % Rician noise, and the CR radiograph RG3 (512² crop) with
quantum noise at 1000 quanta, as the CR MONOCHROME1 file and as a DX MONOCHROME2 file. Each is
written as a DICOM file, enhanced by `python -m runtime.enhance` with the FP32 and the INT8 ONNX
model, and scored against its clean reference (CT: soft-tissue window W400/L40; MR/X-ray: the
clean image's 0.5-99.5 percentile range). The model must beat the noisy input by a margin
(below what the shipped model measured), and is compared with non-local means given the true
noise level at the best of five strengths *for that image* (a stronger baseline than any tuned
setting): issue 11's target, met here on MR at 4 %, on the radiograph at 1000 quanta and on the
head CT at 5 % and 50 % dose, and not yet on the shipped sample, where that comparison is an
expected failure until it is (its reference is a noisy scan, which rewards keeping noise: DECISIONS 32). The full
dose curve is benchmarks.quality's (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from runtime.backends.select import DEFAULT_MODELS, MODALITY_MODELS
from runtime.enhance import main as enhance_main
from runtime.image_contract import modality_image
from runtime.normalization import normalize
from runtime.outputs import write_dicom
from tests.runtime_fixtures import _to_dx
from trainer.baselines import NLM_ORACLE_H_PER_SIGMA, nlm
from trainer.checkpoint import load_checkpoint
from trainer.data import DataConfig, build_heldout_set
from trainer.data.datasets import HeldoutImage, crop_to
from trainer.data.dicom_out import degraded_dataset
from trainer.data.offline import offline_dicom_files
from trainer.metrics import image_quality

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "ct_quarter_dose.dcm"
MODELS = ROOT / "models"
# Minimum gain over the noisy input (dB) per case, about 0.3-0.8 dB (MR 1.9) below what the shipped INT8
# model measured here (2026-12-07, the thirty-seventh session's model, float stages with head phantoms, the last
# nine with their brain grain, the last two float stages and the QAT with training doses up to full dose, phantoms'
# up to twice full dose in the last and the QAT, one head phantom in its QAT: sample +5.2, CT 5 % +14.8, CT 50 %
# +10.7, CR/DX +13.6 dB; FP32 alike; MR by the MR denoiser +9.7 dB). The dose curve's numbers are in
# models/MODEL_CARD.md and docs/BENCHMARKS.md.
MIN_GAIN_DB = {"sample": 4.8, "ct_low_dose": 14.2, "ct_high_dose": 10.1, "mr": 7.8, "cr": 12.7, "dx": 12.7}
SOURCES = {"ct": "J2K_pixelrep_mismatch.dcm", "mr": "MR-SIEMENS-DICOM-WithOverlays.dcm", "cr": "RG3_J2KR.dcm"}


@dataclass
class Case:
    name: str
    image: HeldoutImage  # its clean reference, state and true noise level
    path: Path  # the noisy DICOM file the CLI enhances


def source_file(name: str) -> Path:
    return next(p for p in offline_dicom_files() if p.name == name)


def shipped_data_config() -> DataConfig:
    data = load_checkpoint(MODELS / "medclear_student.qat.pt")["config"]["data"]
    return DataConfig.from_dict({**data, "sources": ["offline"], "dose_fractions": [0.05, 0.5],
                                 "eval_ct_kernels": ["ramp"], "mr_noise_sigmas": [0.04], "xray_photons": [1000]})


def write_case(folder: Path, name: str, image: HeldoutImage, source: Path, dx: bool = False) -> Case:
    """The degraded image as a DICOM file of its source (cropped as the test split crops)."""
    ds = pydicom.dcmread(source)
    values = image.degraded.astype(np.float64) * image.state.scale + image.state.offset
    out = degraded_dataset(ds, values, f"medclear test case {image.degradation}")
    if dx:  # the same radiograph as DX MONOCHROME2 (stored values inverted)
        stored = out.pixel_array.astype(np.uint16)
        out.PixelData = ((1 << int(out.BitsStored)) - 1 - stored).astype(np.uint16).tobytes()
        out.PhotometricInterpretation = "MONOCHROME2"
        _to_dx(out, "MONOCHROME2")
    path = folder / f"{name}.dcm"
    write_dicom(path, out)
    return Case(name, image, path)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[Case]:
    folder = tmp_path_factory.mktemp("cases")
    test_set = {(i.name.split("/")[-1].split("#")[0], i.degradation): i for i in build_heldout_set(shipped_data_config())}
    made = [
        write_case(folder, "ct_low_dose", test_set[(SOURCES["ct"], "ct_dose_0.05_ramp")], source_file(SOURCES["ct"])),
        write_case(folder, "ct_high_dose", test_set[(SOURCES["ct"], "ct_dose_0.5_ramp")], source_file(SOURCES["ct"])),
        write_case(folder, "mr", test_set[(SOURCES["mr"], "mr_rician_0.04")], source_file(SOURCES["mr"])),
        write_case(folder, "cr", test_set[(SOURCES["cr"], "cr_quantum_1000")], source_file(SOURCES["cr"])),
        write_case(folder, "dx", test_set[(SOURCES["cr"], "cr_quantum_1000")], source_file(SOURCES["cr"]), dx=True),
    ]
    reference = test_set[("explicit_VR-UN.dcm", "ct_dose_0.05_ramp")]  # for its clean slice and spec
    hu = modality_image(pydicom.dcmread(SAMPLE))[0][0]
    state = reference.state
    sample = HeldoutImage("sample", "CT", normalize(hu, state), reference.clean, reference.spec, "ct_dose_0.25_ramp",
                          0.25, "ramp", float(np.std(normalize(hu, state) - reference.clean)), state)
    return [Case("sample", sample, SAMPLE), *made]


def read_normalized(path: Path, image: HeldoutImage) -> np.ndarray:
    """A DICOM file's pixels in the reference's normalized space (cropped like the reference)."""
    values = modality_image(pydicom.dcmread(path))[0][0]
    return normalize(crop_to(values, max(image.clean.shape)), image.state)


def score(normalized: np.ndarray, image: HeldoutImage) -> float:
    metrics = image_quality(normalized, image.clean, image.modality, image.spec, with_fsim=False, with_ssim=False)
    return metrics["psnr_window"] if image.modality == "CT" else metrics["psnr"]


def shipped_model(modality: str, precision: str) -> Path:
    """The shipped model of ``precision`` that a run naming no model gives a ``modality`` file
    (runtime/routing.py: MR has its own denoiser)."""
    names = MODALITY_MODELS["denoise"].get(modality, DEFAULT_MODELS)
    return MODELS / next(name for name in names if f".{precision}." in name)


@pytest.fixture(scope="module")
def scores(cases, tmp_path_factory) -> dict[str, dict[str, float]]:
    """PSNR per case of: the noisy input, the best oracle NLM, and the CLI with each modality's
    shipped model of each precision."""
    result = {case.name: {} for case in cases}
    for precision in ("fp32", "int8"):
        out = tmp_path_factory.mktemp(precision)
        for modality in {case.image.modality for case in cases}:
            model = shipped_model(modality, precision)
            paths = [str(case.path) for case in cases if case.image.modality == modality]
            assert enhance_main([*paths, "-o", str(out), "--model", str(model), "-q", "--threads", "2"]) == 0
        for case in cases:
            result[case.name][precision] = score(read_normalized(out / f"{case.path.stem}.enhanced.dcm", case.image),
                                                 case.image)
    for case in cases:
        noisy = read_normalized(case.path, case.image)
        result[case.name]["input"] = score(noisy, case.image)
        result[case.name]["nlm"] = max(
            score(nlm(noisy, case.image.noise_sigma, h_per_sigma=h), case.image) for h in NLM_ORACLE_H_PER_SIGMA
        )
    print(json.dumps(result, indent=1))
    return result


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("case", list(MIN_GAIN_DB))
def test_shipped_model_beats_the_noisy_input(scores, case, precision):
    got = scores[case]
    assert got[precision] - got["input"] >= MIN_GAIN_DB[case], f"{case} {precision}: {got}"


# Issue 11's target. The cases the shipped model does not meet yet (docs/BENCHMARKS.md, dose
# curve) are reported as xfail, never as a pass, and XPASS shows when a retrained model meets them;
# the others (MR at 4 %, the radiograph as CR and DX since the seventh session's model, the head CT
# at 5 % and 50 % dose since the twenty-sixth's) must hold.
NLM_NOT_MET = ("issue 11: the shipped model does not beat oracle NLM (best-of-five h for this image) on the "
               "shipped sample (abdomen, quarter dose): the thirty-seventh session's model in INT8 32.219 dB against "
               "32.644 (-0.42; the thirty-sixth's -0.48, the thirty-fifth's -0.39, the thirty-fourth's and "
               "thirty-third's -0.43, the thirty-second's two -0.34 and -0.42, the thirty-first's -0.36, the "
               "thirtieth's -0.31, the twenty-seventh's -0.46, the twentieth's -1.04). "
               "Its reference is a noisy full-dose scan: on phantoms made the same way (reference noise 10-20 HU) the "
               "model beats oracle NLM by +1.0 to +4.8 dB against the truth and loses 0.45-0.68 against the noisy "
               "scan (benchmarks.noisy_reference, DECISIONS 32)")
NLM_CASES = [pytest.param(case, marks=pytest.mark.xfail(reason=NLM_NOT_MET, strict=False))
             if case == "sample" else case for case in MIN_GAIN_DB]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("case", NLM_CASES)
def test_shipped_model_beats_oracle_nlm(scores, case, precision):
    got = scores[case]
    assert got[precision] > got["nlm"], f"{case} {precision}: {got}"


def test_int8_model_stays_within_0_2_db_of_fp32(scores):
    """Issue 11's INT8 target (met since the eleventh session's model: worst here -0.04 dB with the twentieth's)."""
    for case, got in scores.items():
        assert got["int8"] - got["fp32"] >= -0.2, f"{case}: {got}"


def test_a_run_naming_no_model_gives_each_file_its_modality_model(cases, scores, tmp_path, monkeypatch):
    """The default CLI (no --model) routes: each output equals the FP32 output of its modality's
    shipped model, which the cases above score."""
    monkeypatch.delenv("MEDCLEAR_MODEL", raising=False)
    assert enhance_main([*(str(case.path) for case in cases), "-o", str(tmp_path), "-q", "--threads", "2"]) == 0
    for case in cases:
        got = read_normalized(tmp_path / f"{case.path.stem}.enhanced.dcm", case.image)
        assert score(got, case.image) == pytest.approx(scores[case.name]["fp32"], abs=1e-6), case.name
