"""``python -m benchmarks.quality --dose-curve`` on a tiny configuration (64² crops, two levels
per modality, two CT kernels) with tiny FP32/"INT8" ONNX models: every level and method is in
the JSON, the Markdown and the PNGs; the oracle NLM gets the true sigma; the baselines are tuned
on validation images only; each CT window's strength; the target check's arithmetic."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import trainer.baselines as baselines
from benchmarks import dose_curve, dose_report, quality
from benchmarks.markdown import section_name
from runtime.normalization import NormalizationSpec
from tests.onnx_fixtures import write_tiny_onnx
from trainer.data import DataConfig, HeldoutImage, build_heldout_set

DATA = {
    "sources": ["offline", "phantom"], "modalities": ["CT", "MR", "CR"], "ct_hu_range": [-160, 240],
    "dose_fractions": [0.1, 0.5], "ct_kernels": ["ramp", "hann"], "eval_ct_kernels": ["ramp", "hann"],
    "ct_angles": 30, "mr_noise_sigmas": [0.02, 0.08], "xray_noise": "quantum", "xray_photons": [1000, 300],
    "phantom_count": 1, "phantom_size": 64, "heldout_phantoms": 1, "validation_phantoms": 1, "mr_validation_phantoms": 1,
    "validation_fraction": 0.1, "heldout_max_side": 64,
}
LEVELS = {"CT": {"ct_dose_0.1_ramp", "ct_dose_0.5_ramp", "ct_dose_0.1_hann", "ct_dose_0.5_hann"},
          "MR": {"mr_rician_0.02", "mr_rician_0.08"}, "CR": {"cr_quantum_1000", "cr_quantum_300"}}
METHODS = {"input", "nlm_oracle", "nlm_estimated", "tv_oracle", "tiny.fp32.onnx", "tiny.int8.onnx"}
DOCUMENT = "# Benchmarks\n\nbefore\n\n{}\nold table\n{}\n\nafter\n".format(*dose_report.MARKERS)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One dose-curve run; every call of trainer.baselines' NLM is recorded."""
    root = tmp_path_factory.mktemp("dose_curve")
    (root / "data.json").write_text(json.dumps({"data": DATA}))
    (root / "BENCHMARKS.md").write_text(DOCUMENT)
    models = [write_tiny_onnx(root / "tiny.fp32.onnx", modalities=("CT", "MR", "CR")),
              write_tiny_onnx(root / "tiny.int8.onnx", seed=1, modalities=("CT", "MR", "CR"), precision="int8")]
    mr_models = [write_tiny_onnx(root / "mr.fp32.onnx", seed=2, modalities=("MR",)),
                 write_tiny_onnx(root / "mr.int8.onnx", seed=3, modalities=("MR",), precision="int8")]
    calls = []
    nlm = baselines.BASELINES["nlm"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(baselines.BASELINES, "nlm", lambda image, sigma=None, **kw: calls.append((image, sigma)) or
                      nlm(image, sigma, **kw))
        status = quality.main(["--dose-curve", *map(str, models), "--mr-models", *map(str, mr_models),
                               "--data-from", str(root / "data.json"),
                               "--max-images", "1", "--threads", "1", "--crop", "32", "--out", str(root / "d.json"),
                               "--plot", str(root / "d.png"), "--grid", str(root / "g.png"),
                               "--markdown", str(root / "BENCHMARKS.md")])
    record = json.loads((root / "d.json").read_text())
    cfg = DataConfig.from_dict(record["data_config"])  # DATA with the dose curve's reference screen
    assert cfg.max_ct_reference_noise_hu == quality.REFERENCE_SCREEN["max_ct_reference_noise_hu"]
    return {"status": status, "root": root, "record": record, "calls": calls,
            "test": build_heldout_set(cfg, "test"), "validation": build_heldout_set(cfg, "validation")}


@pytest.mark.slow
def test_every_level_and_method_is_in_every_output(run) -> None:
    assert run["status"] == 0
    record = run["record"]
    cells = {(r["modality"], r["degradation"]): set() for r in record["summary"]}
    for row in record["summary"]:
        cells[(row["modality"], row["degradation"])].add(row["method"])
        assert row["images"] == 1
        if row["modality"] == "CT":
            assert {"psnr_window", "ssim_window", "psnr_lung", "ssim_lung", "psnr_full"} <= row.keys()
            assert row["noise_unit"] == "HU" and row["kernel"] in ("ramp", "hann")
    assert {(m, d) for m, levels in LEVELS.items() for d in levels} == set(cells)
    assert all(methods == METHODS for methods in cells.values())
    assert record["roles"] == {"fp32": "tiny.fp32.onnx", "int8": "tiny.int8.onnx"}
    routed = record["modality_models"]["MR"]
    assert {p: r["file"]["path"].rsplit("/", 1)[-1] for p, r in routed.items()} == {"fp32": "mr.fp32.onnx",
                                                                                   "int8": "mr.int8.onnx"}
    assert "MR: " in next(m["description"] for m in record["methods"] if m["key"] == "tiny.int8.onnx")
    assert record["machine"]["cpu"] and len(record["models"]["tiny.int8.onnx"]["file"]["sha256"]) == 64
    assert {t["status"] for t in record["targets"]} <= {"pass", "miss"}  # every target measured
    for name in ("d.png", "g.png"):
        assert (run["root"] / name).stat().st_size > 5000
    document = (run["root"] / "BENCHMARKS.md").read_text()
    assert document.startswith("# Benchmarks\n\nbefore\n") and document.endswith("\n\nafter\n")
    assert "old table" not in document and document.count(dose_report.MARKERS[0]) == 1
    for text in ("dose 0.1", "dose 0.5", "σ 0.08", "300 quanta", "lung window", "INT8 − NLM (true σ)", "Targets"):
        assert text in document


@pytest.mark.slow
def test_oracle_nlm_gets_the_true_sigma(run) -> None:
    rows = [r for r in run["record"]["per_image"] if r["method"] == "nlm_oracle"]
    assert len(rows) == sum(len(levels) for levels in LEVELS.values())
    for image in (i for i in run["test"] if i.name in run["record"]["test_images"]):
        given = [sigma for array, sigma in run["calls"] if array is image.degraded]
        assert image.noise_sigma in given, image.degradation  # the oracle's call
        assert any(sigma != image.noise_sigma for sigma in given)  # and the estimated-sigma NLM's
        row = next(r for r in rows if r["image"] == image.name and r["degradation"] == image.degradation)
        assert row["sigma"] == image.noise_sigma
    estimated = [r for r in run["record"]["per_image"] if r["method"] == "nlm_estimated"]
    assert all(0.3 < r["sigma"] / r["noise_sigma"] < 3 for r in estimated)


@pytest.mark.slow
def test_baselines_are_tuned_on_validation_images_never_test(run) -> None:
    test_names = {image.name for image in run["test"]}
    validation_names = {image.name for image in run["validation"]}
    tuned = run["record"]["baseline_tuning"]
    assert set(tuned) == {f"{m}/{d}" for m, levels in LEVELS.items() for d in levels}
    for key, entry in tuned.items():
        for name in ("nlm", "tv"):
            names = set(entry[name]["tuning_images"])
            assert names and not names & test_names, key
            if key.startswith("CR/"):  # no validation radiograph in the packages: a training crop
                assert entry[name]["tuning_split"].startswith("train") and not names & validation_names
            else:
                assert entry[name]["tuning_split"] == "validation" and names <= validation_names, key
            assert entry[name]["sigma"] == "true"
    ct = tuned["CT/ct_dose_0.1_ramp"]["nlm"]["best"]
    assert set(ct) == {"psnr_window", "psnr_lung"}


def _row(modality: str, degradation: str, method: str, **scores: float) -> dict:
    return {"modality": modality, "degradation": degradation, "method": method, "kernel": "ramp",
            "level": 0.1, "noise": 20.0, "noise_unit": "HU", **scores}


def test_target_check_margins() -> None:
    roles = {"int8": "s.int8.onnx", "fp32": "s.fp32.onnx"}
    summary = [
        _row("CT", "a", "s.int8.onnx", psnr_window=30.0, psnr_lung=40.0),
        _row("CT", "a", "nlm_oracle", psnr_window=29.0, psnr_lung=40.5),
        _row("CT", "a", "s.fp32.onnx", psnr_window=30.1, psnr_lung=40.0),
        _row("CT", "b", "s.int8.onnx", psnr_window=28.0, psnr_lung=41.0),
        _row("CT", "b", "nlm_oracle", psnr_window=28.5, psnr_lung=40.0),
        _row("CT", "b", "s.fp32.onnx", psnr_window=28.3, psnr_lung=41.5),
    ]
    targets = {t["description"]: t for t in dose_curve.target_check(summary, roles)}
    every = targets["INT8 >= oracle NLM, CT soft-tissue window W400/L40, every dose and kernel"]
    assert [c["margin_db"] for c in every["cells"]] == pytest.approx([1.0, -0.5])
    assert every["value_db"] == pytest.approx(-0.5) and every["cells_met"] == 1 and every["status"] == "miss"
    mean = targets["INT8 - oracle NLM, CT soft-tissue window, mean over doses and kernels"]
    assert mean["value_db"] == pytest.approx(0.25) and mean["limit_db"] == 1.0 and mean["status"] == "miss"
    lung = targets["INT8 >= oracle NLM, CT lung window W1500/L-600, every dose and kernel"]
    assert lung["value_db"] == pytest.approx(-0.5) and lung["cells_met"] == 1
    fp32 = targets["INT8 within 0.2 dB of FP32, CT soft-tissue window"]
    assert [c["margin_db"] for c in fp32["cells"]] == pytest.approx([-0.1, -0.3])
    assert fp32["cells_met"] == 1 and fp32["status"] == "miss"
    fp32_lung = targets["INT8 within 0.2 dB of FP32, CT lung window"]
    assert fp32_lung["value_db"] == pytest.approx(-0.5)
    for missing in ("INT8 >= oracle NLM, MR, every noise level", "INT8 within 0.2 dB of FP32, MR and X-ray"):
        assert targets[missing]["status"] == "not measured" and targets[missing]["value_db"] is None
    # Without an FP32 model the INT8-vs-FP32 targets are not measured (not failed).
    no_fp32 = {t["description"]: t for t in dose_curve.target_check(summary, {"int8": "s.int8.onnx"})}
    assert no_fp32["INT8 within 0.2 dB of FP32, CT soft-tissue window"]["status"] == "not measured"
    assert no_fp32["INT8 >= oracle NLM, CT lung window W1500/L-600, every dose and kernel"]["status"] == "miss"


def test_each_ct_window_uses_the_strength_tuned_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(baselines.BASELINES, "nlm", lambda image, sigma, h_per_sigma=None: image * h_per_sigma)
    image = HeldoutImage("x", "CT", np.ones((4, 4), dtype=np.float32), np.ones((4, 4), dtype=np.float32),
                         NormalizationSpec(), "ct_dose_0.1_ramp", noise_sigma=0.1)
    keys = [f"{m}_{w}" for m in ("psnr", "ssim") for w in ("full", "window", "lung")]
    quality = lambda out: {k: float(out.mean()) for k in keys}  # noqa: E731
    output, scores = dose_curve.classical("nlm", image, 0.1, {"psnr_window": 1.0, "psnr_lung": 2.0}, quality)
    assert output.mean() == 1.0  # the image shown is the primary (soft-tissue) one
    assert scores == {"psnr_full": 1.0, "ssim_full": 1.0, "psnr_window": 1.0, "ssim_window": 1.0,
                      "psnr_lung": 2.0, "ssim_lung": 2.0}


def test_markdown_section_ignores_markers_quoted_in_prose(tmp_path):
    from benchmarks.dose_report import MARKERS, write_section

    doc = tmp_path / "doc.md"
    doc.write_text(f"prose quoting `{MARKERS[0]}` inline\n\n{MARKERS[0]}\nold\n{MARKERS[1]}\ntail\n")
    write_section(doc, "new table")
    text = doc.read_text()
    assert text.startswith(f"prose quoting `{MARKERS[0]}` inline") and "old" not in text
    assert f"{MARKERS[0]}\nnew table\n{MARKERS[1]}\ntail" in text


def test_a_routed_modality_is_enhanced_by_its_own_student_of_the_same_precision(monkeypatch) -> None:
    """The dose curve scores a student column as a run that names no model would: MR images by the
    MR student of that precision, the rest by the student itself; the teacher serves itself."""
    def runner(label: str, precision: str, kind: str = "onnxruntime"):
        return dose_curve.Runner(spec=label, label=label, kind=kind, engine="", precision=precision,
                                 size_multiple=1, backend=None)

    fp32, int8, teacher = runner("s.fp32", "fp32"), runner("s.int8", "int8"), runner("t.pt", "fp32", "pytorch")
    routes = {"MR": {"int8": runner("mr.int8", "int8")}}
    monkeypatch.setattr(dose_curve, "enhance", lambda used, image: np.full_like(image.clean, len(used.label)))
    monkeypatch.setattr(dose_curve, "image_quality", lambda output, *a, **k: {"psnr": float(output.flat[0])})
    monkeypatch.setattr(dose_curve.tuning, "best_strengths", lambda *a: {"psnr": None})
    monkeypatch.setattr(dose_curve.tuning, "run_baseline", lambda name, degraded, *a: degraded)
    monkeypatch.setattr(dose_curve, "estimated_sigma", lambda image: 0.1)
    spec = NormalizationSpec()
    for modality, expected_int8 in (("MR", len("mr.int8")), ("CT", len("s.int8"))):
        clean = np.zeros((8, 8), np.float32)
        image = HeldoutImage("x", modality, clean + 0.1, clean, spec, "d", 0.1, None, 0.1)
        outputs, _ = dose_curve.evaluate(image, {}, [teacher, fp32, int8], False, routes)
        assert outputs["s.int8"].flat[0] == expected_int8, modality
        assert outputs["s.fp32"].flat[0] == len("s.fp32") and outputs["t.pt"].flat[0] == len("t.pt")


def test_mr_students_stand_in_only_where_it_is_clear_which_column(tmp_path, monkeypatch) -> None:
    """Default: the installed MR denoisers only when no student is named; a named MR student
    stands in for the one student of its precision, never for one of several."""
    def opened(specs: list[str]) -> list[dose_curve.Runner]:
        return quality.open_runners(argparse.Namespace(models=specs, teacher=None), 1, lambda text: None)[0]

    fp32 = write_tiny_onnx(tmp_path / "s.fp32.onnx", modalities=("CT", "MR"))
    int8 = write_tiny_onnx(tmp_path / "s.int8.onnx", seed=1, modalities=("CT", "MR"), precision="int8")
    other_int8 = write_tiny_onnx(tmp_path / "t.int8.onnx", seed=4, modalities=("CT", "MR"), precision="int8")
    mr_int8 = write_tiny_onnx(tmp_path / "mr.int8.onnx", seed=2, modalities=("MR",), precision="int8")
    monkeypatch.setattr(dose_curve, "MR_MODELS", (str(mr_int8),))
    log: list[str] = []
    named = argparse.Namespace(models=[str(fp32), str(int8)], mr_models=None)
    assert dose_curve.open_routes(named, opened(named.models), 1, log.append) == {}
    shipped = argparse.Namespace(models=[], mr_models=None)  # no student named: the installed MR denoisers
    routes = dose_curve.open_routes(shipped, opened([str(fp32), str(int8)]), 1, log.append)
    assert {p: r.label for p, r in routes["MR"].items()} == {"int8": "mr.int8.onnx"}
    several = argparse.Namespace(models=[str(int8), str(other_int8)], mr_models=[str(mr_int8)])
    assert dose_curve.open_routes(several, opened(several.models), 1, log.append) == {}
    assert "2 int8 students" in log[-1]


@pytest.mark.slow
def test_validation_split_measures_validation_images_only(tmp_path) -> None:
    """``--split validation`` (where recipes may be chosen) scores the validation images, never a
    test image, names the split in its record and report, and keeps out of the docs' test tables."""
    (tmp_path / "data.json").write_text(json.dumps({"data": {**DATA, "modalities": ["CT"]}}))
    int8 = write_tiny_onnx(tmp_path / "tiny.int8.onnx", seed=1, modalities=("CT",), precision="int8")
    status = quality.main(["--dose-curve", "--split", "validation", str(int8), "--data-from",
                           str(tmp_path / "data.json"), "--max-images", "1", "--threads", "1", "--crop", "32",
                           "--out", str(tmp_path / "v.json"), "--plot", str(tmp_path / "v.png"),
                           "--grid", str(tmp_path / "g.png")])
    assert status == 0
    record = json.loads((tmp_path / "v.json").read_text())
    cfg = DataConfig.from_dict(record["data_config"])
    validation = {image.name for image in build_heldout_set(cfg, "validation")}
    test = {image.name for image in build_heldout_set(cfg, "test")}
    assert record["split"] == "validation" and "test_images" not in record
    assert record["validation_images"] and set(record["validation_images"]) <= validation
    assert not {row["image"] for row in record["per_image"]} & test
    assert {row["degradation"] for row in record["summary"]} == LEVELS["CT"]
    assert dose_report.markdown(record).startswith("Validation split: 1 images")
    assert section_name(record) == "dose-curve-validation"  # never the test split's section


def test_validation_split_defaults_its_own_outputs_and_refuses_the_docs() -> None:
    args = quality.parse_args(["--dose-curve", "--split", "validation"])
    assert (args.out.name, args.plot.name, args.grid.name) == (
        "dose_curve_validation.json", "dose_curve_validation.png", "dose_curve_validation_crops.png")
    assert quality.parse_args(["--dose-curve"]).out.name == "dose_curve.json"
    for argv in (["--dose-curve", "--split", "validation", "--markdown", "docs/BENCHMARKS.md"],
                 ["--split", "validation"]):
        with pytest.raises(SystemExit):
            quality.parse_args(argv)
