"""The x2 super-resolution benchmark on tiny phantoms: classical baselines and models scored
against the originals, targets computed from the summary, the Markdown section from the record."""

import json

import numpy as np
import pytest

from benchmarks import super_resolution
from benchmarks.markdown import read_marked_section, render
from onnx_fixtures import write_tiny_onnx, write_tiny_sr_onnx
from test_trainer_sr import TINY_SR_DATA


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr2bench")
    config = root / "data.json"
    config.write_text(json.dumps({"data": TINY_SR_DATA}))
    fp32 = write_tiny_sr_onnx(root / "tiny_sr.fp32.onnx", precision="fp32")
    int8 = write_tiny_sr_onnx(root / "tiny_sr.int8.onnx", seed=1, precision="int8")
    doc = root / "doc.md"
    doc.write_text("# doc\n")
    status = super_resolution.main([str(fp32), str(int8), "--data-from", str(config), "--threads", "1",
                                    "--out", str(root / "record.json"), "--grid", str(root / "crops.png"),
                                    "--markdown", str(doc)])
    return status, json.loads((root / "record.json").read_text()), root, config


def test_every_test_image_is_scored_for_every_method(run):
    status, record, root, _ = run
    assert status == 0 and record["benchmark"] == "super_resolution" and record["test_images"] >= 2
    # The benchmark's MR protocol (--mr-kspace, default dct) overrides the data configuration's "dft".
    assert record["data_config"]["sr_mr_kspace"] == "dct"
    # The tiny configuration's test split: CT phantoms (MR phantoms are never test images).
    methods = {(row["modality"], row["method"]) for row in record["summary"]}
    assert methods == {("CT", m) for m in ("nearest", "bicubic", "lanczos", "zero-fill", "zero-fill-dct",
                                           "tiny_sr.fp32.onnx", "tiny_sr.int8.onnx")}
    rows = {row["method"]: row for row in record["summary"]}
    # Interpolation beats pixel repetition; pixel repetition has the most (false) fine texture.
    assert rows["bicubic"]["psnr_full"] > rows["nearest"]["psnr_full"]
    assert rows["bicubic"]["texture_window"] < rows["nearest"]["texture_window"]
    assert (root / "crops.png").read_bytes()[:4] == b"\x89PNG"


def test_targets_are_differences_of_the_summary(run):
    _, record, _, _ = run
    rows = {(row["modality"], row["method"]): row for row in record["summary"]}
    assert {k: v for k, v in record["roles"].items() if ":" not in k} == {"fp32": "tiny_sr.fp32.onnx",
                                                                          "int8": "tiny_sr.int8.onnx"}
    checks = {(t["target"], t["modality"]): t for t in record["targets"]}
    over_bicubic = checks[("int8_over_bicubic_db", "CT")]
    expected = rows[("CT", "tiny_sr.int8.onnx")]["psnr_window"] - rows[("CT", "bicubic")]["psnr_window"]
    assert over_bicubic["measured_db"] == pytest.approx(expected)
    assert over_bicubic["pass"] is (expected >= 1.5)
    assert checks[("teacher_minus_int8_db", "CT")]["pass"] is None  # no teacher given: not measured
    assert checks[("int8_over_bicubic_db", "MR")]["pass"] is None  # no MR test image here
    assert np.isfinite(checks[("fp32_minus_int8_db", "CT")]["measured_db"])


def test_markdown_section_is_what_the_record_renders_to(run):
    _, record, root, _ = run
    assert read_marked_section(root / "doc.md", "super-resolution") == render(record).rstrip()


def test_a_model_that_is_not_x2_is_refused(run, tmp_path):
    _, _, _, config = run
    denoiser = write_tiny_onnx(tmp_path / "denoiser.onnx")
    with pytest.raises(SystemExit, match="not a x2 model"):
        super_resolution.main([str(denoiser), "--data-from", str(config), "--out", str(tmp_path / "r.json")])


def test_a_model_not_released_for_a_modality_is_not_scored_there_and_its_targets_say_so(run, tmp_path):
    _, _, _, config = run
    mr_only = write_tiny_sr_onnx(tmp_path / "mr_only.int8.onnx", precision="int8", modalities=("MR",))
    record_path = tmp_path / "r.json"
    assert super_resolution.main([str(mr_only), "--data-from", str(config), "--threads", "1", "--out",
                                  str(record_path), "--grid", str(tmp_path / "g.png")]) == 0
    record = json.loads(record_path.read_text())
    assert record["not_covered"] == {"mr_only.int8.onnx": ["CT"]}
    assert "mr_only.int8.onnx" not in {row["method"] for row in record["summary"]}  # CT images only here
    over_bicubic = {(t["target"], t["modality"]): t for t in record["targets"]}[("int8_over_bicubic_db", "CT")]
    assert over_bicubic["pass"] is None and over_bicubic["note"] == "mr_only.int8.onnx not released for CT"
    assert "not released for CT" in super_resolution.markdown(record)


def test_packaged_ct_scans_are_also_scored_apart_from_the_phantoms():
    rows = [{"image": "offline:pydicom/CT_small.dcm#0", "modality": "CT", "method": "m", "metrics": {"psnr_window": 30.0}},
            {"image": "phantom:heldout-0", "modality": "CT", "method": "m", "metrics": {"psnr_window": 40.0}},
            {"image": "offline:pydicom/MR_small.dcm#0", "modality": "MR", "method": "m", "metrics": {"psnr": 35.0}}]
    extended = super_resolution.with_real_ct(rows)
    assert [r["modality"] for r in extended[3:]] == [super_resolution.REAL_CT]
    assert extended[3]["image"] == rows[0]["image"] and super_resolution.primary_metric(super_resolution.REAL_CT) == "psnr_window"


def test_a_modality_with_a_model_of_its_own_is_judged_on_that_model():
    """The MR x2 model beside the CT one: MR's targets read the MR model's rows, CT's the CT model's."""
    roles = {"int8": "ct.int8.onnx", "int8:CT": "ct.int8.onnx", "int8:MR": "mr.int8.onnx",
             "fp32": "ct.fp32.onnx", "fp32:CT": "ct.fp32.onnx", "fp32:MR": "mr.fp32.onnx"}
    summary = [{"modality": "MR", "method": method, "psnr": value}
               for method, value in (("bicubic", 30.0), ("lanczos", 31.0), ("mr.int8.onnx", 32.0), ("mr.fp32.onnx", 32.1),
                                     ("ct.int8.onnx", 20.0))]
    summary += [{"modality": "CT", "method": method, "psnr_window": value}
                for method, value in (("bicubic", 40.0), ("lanczos", 40.5), ("ct.int8.onnx", 41.0))]
    for order in (roles, {**roles, "int8": "mr.int8.onnx", "fp32": "mr.fp32.onnx"}):  # the MR model listed first
        checks = {(t["target"], t["modality"]): t for t in super_resolution.target_check(summary, order, {})}
        assert checks[("int8_over_bicubic_db", "MR")]["measured_db"] == pytest.approx(2.0)
        assert checks[("fp32_minus_int8_db", "MR")]["measured_db"] == pytest.approx(0.1)
        assert checks[("int8_over_lanczos_db", "CT")]["measured_db"] == pytest.approx(0.5)
    assert super_resolution.role_for({"int8": "a", "int8:MR": "a", "int8:*": "b"}, "int8", "CT") == "b"


def test_a_named_model_file_that_is_missing_stops_before_any_work(tmp_path, capsys):
    """Not skipped as a model this machine cannot run: a typo costs no run and leaves no silent gap."""
    for argv in ([str(tmp_path / "typo.int8.onnx")], ["--teacher", str(tmp_path / "teacher.pt")]):
        with pytest.raises(SystemExit) as stopped:
            super_resolution.parse_args(argv)
        assert stopped.value.code == 2 and f"model file not found: {tmp_path}" in capsys.readouterr().err
