"""compiler.calibrate: post-training INT8 Q/DQ ONNX from DICOM images, run on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pydicom
import pytest
from onnx import numpy_helper

from compiler.__main__ import main
from compiler.calibrate import calibration_batches, check_int8_onnx, quantize
from compiler.errors import CompilerError
from compiler.onnx_io import OPSET, cpu_session, metadata, opset_version
from compiler.quality import HeldoutPair, psnr_drop
from compiler.samples import CALIBRATION_CT, HELDOUT_CT, fit_to_multiple, packaged_files, prepared_frames
from onnx_fixtures import tensorrt_importable, write_tiny_onnx
from runtime.image_contract import prepare
from runtime.model_contract import INPUT_NAME, NOISE_MAP, OUTPUT_NAME, ModelContract
from runtime.noise import normalized_noise_level
from trainer.config import load_config
from trainer.data.config import DataConfig
from trainer.data.offline import offline_dicom_entries
from trainer.data.sources import group_frames, read_frames
from trainer.data.split import split_of

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    files = packaged_files(CALIBRATION_CT)
    assert files, "the packaged CT slices are missing: install the data extra (pip install -e '.[data]': pydicom-data)"
    folder = tmp_path_factory.mktemp("dicom")
    for path in files:
        (folder / path.name).symlink_to(path)
    (folder / "notes.txt").write_text("not DICOM; must be skipped")
    return folder


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, calibration_dir):
    folder = tmp_path_factory.mktemp("calib")
    fp32 = write_tiny_onnx(folder / "tiny.fp32.onnx", width=6)
    result = quantize(fp32, calibration_dir, folder / "tiny.int8.onnx", max_side=128)
    return fp32, result


def _tensors(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_calibrate_on_images_of_different_sizes(method, tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "CT_small.dcm").symlink_to(get_testdata_file("CT_small.dcm"))  # 128 x 128
    large = packaged_files(CALIBRATION_CT)[0]  # 512 x 512
    (folder / large.name).symlink_to(large)
    fp32 = write_tiny_onnx(tmp_path / "tiny.fp32.onnx", width=6)
    result = quantize(fp32, folder, tmp_path / "tiny.int8.onnx", method=method)
    assert result.images >= 2 and result.quantize_nodes > 0


def test_int8_onnx_is_symmetric_per_channel_opset17(calibrated):
    _, result = calibrated
    model = onnx.load(str(result.path))
    assert opset_version(model) == OPSET
    tensors = _tensors(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and result.images > 0
    for node in qdq:
        zero_point = tensors[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    # Weights stay float behind a Q/DQ pair (TensorRT 8.x); the first conv has 6 output
    # channels, so its weight QuantizeLinear carries 6 scales.
    weight_q = [n for n in qdq if n.op_type == "QuantizeLinear" and n.input[0] in tensors]
    assert weight_q and all(tensors[n.input[0]].dtype == np.float32 for n in weight_q)
    assert any(tensors[n.input[1]].shape == (6,) for n in weight_q)
    assert not [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in tensors]
    assert result.per_channel_weights >= 1


def test_int8_onnx_keeps_contract_and_runs_in_ort(calibrated):
    fp32, result = calibrated
    contract = ModelContract.from_metadata(metadata(onnx.load(str(result.path))))
    assert contract.precision == "int8" and contract.model_name == "tiny" and contract.size_multiple == 4
    # A calibration image: min/max calibration covers its ranges, so only rounding remains.
    # (The random-weight tiny model clips on other images; trained models are measured by
    # `verify --heldout`, see docs/COMPILER.md.)
    frame = prepared_frames(packaged_files(CALIBRATION_CT), contract)[0]
    batch = frame.batch(fit_to_multiple(frame.image, contract.size_multiple, 128))
    # "basic": Q/DQ as float ops, the graph's semantics (fused AVX2 int8 kernels may saturate;
    # docs/COMPILER.md).
    outputs = [cpu_session(p, "basic").run([OUTPUT_NAME], {INPUT_NAME: batch})[0] for p in (fp32, result.path)]
    assert outputs[1].shape == batch.shape
    error = np.abs(outputs[0] - outputs[1])
    assert 0 < error.max() < 0.05 and error.mean() < 0.005


def test_a_noise_map_model_is_calibrated_on_images_with_their_noise_level(calibration_dir, tmp_path):
    fp32 = write_tiny_onnx(tmp_path / "map.fp32.onnx", width=6, noise_conditioning=NOISE_MAP)
    contract = ModelContract.from_metadata(metadata(onnx.load(str(fp32))))
    batches = calibration_batches(calibration_dir, contract, 8, 128)
    assert {b.shape[:2] for b in batches} == {(1, 2)} and all(np.ptp(b[0, 1]) == 0 for b in batches)
    first = prepare(pydicom.dcmread(calibration_dir / "693_UNCI.dcm"), contract.normalization_for("CT"))  # sorted first
    level = normalized_noise_level(first.normalized, first.states, "CT", first.padding)
    assert batches[0][0, 1, 0, 0] == np.float32(level) and len({float(b[0, 1, 0, 0]) for b in batches}) > 1
    result = quantize(fp32, calibration_dir, tmp_path / "map.int8.onnx", max_side=128)
    assert ModelContract.from_metadata(metadata(onnx.load(str(result.path)))).input_channels == 2
    outputs = [cpu_session(p, "basic").run([OUTPUT_NAME], {INPUT_NAME: batches[0]})[0] for p in (fp32, result.path)]
    error = np.abs(outputs[0] - outputs[1])
    assert outputs[1].shape == (1, 1, *batches[0].shape[2:]) and 0 < error.max() < 0.05 and error.mean() < 0.005


def test_check_int8_onnx_rejects_fp32_and_nonzero_zero_points(calibrated, tmp_path):
    fp32, result = calibrated
    with pytest.raises(CompilerError, match="no QuantizeLinear"):
        check_int8_onnx(fp32)
    model = onnx.load(str(result.path))
    zp = next(i for i in model.graph.initializer if i.name.endswith("zero_point"))
    zp.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(zp).shape, 3, np.int8), zp.name))
    onnx.save(model, str(tmp_path / "asym.onnx"))
    with pytest.raises(CompilerError, match="non-zero zero points"):
        check_int8_onnx(tmp_path / "asym.onnx")


def test_psnr_drop_of_identical_models_is_zero(calibrated):
    fp32, result = calibrated

    def Pair(seed):  # a held-out CT image in HU
        rng = np.random.default_rng(seed)
        clean = rng.uniform(-1024, 1024, (30, 42)).astype(np.float32)
        degraded = clean + rng.normal(0, 80, clean.shape).astype(np.float32)
        return HeldoutPair(f"p{seed}", "CT", degraded, clean, 4095.0)

    same = psnr_drop(fp32, fp32, [Pair(1), Pair(2)])
    assert [row.drop for row in same] == [0.0, 0.0] and all(np.isfinite(r.psnr_fp32) for r in same)
    quantized = psnr_drop(fp32, result.path, [Pair(1)])
    assert quantized[0].psnr_int8 != quantized[0].psnr_fp32


def test_cli_calibrate_rejects_folder_without_dicom(tmp_path, capsys):
    fp32 = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("hello")
    code = main(["calibrate", "--onnx", str(fp32), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no readable DICOM image" in err and "\n" not in err


def test_cli_calibrate_refuses_quantized_input(calibrated, calibration_dir, tmp_path, capsys):
    _, result = calibrated
    code = main(["calibrate", "--onnx", str(result.path), "--data", str(calibration_dir), "--out", str(tmp_path / "o.onnx")])
    assert code == 2 and "already quantized" in capsys.readouterr().err


def test_cli_calibrate_cache_fails_cleanly_without_tensorrt(calibration_dir, tmp_path, capsys):
    if tensorrt_importable():
        pytest.skip("TensorRT is installed here; the cache path is covered by GPU tests")
    fp32 = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    code = main(["calibrate", "--onnx", str(fp32), "--data", str(calibration_dir), "--out",
                 str(tmp_path / "o.onnx"), "--cache", str(tmp_path / "c.cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: TensorRT is not available") and "\n" not in err
    assert not (tmp_path / "c.cache").exists()


def _copies(label: str, frames: dict[str, list]) -> list[str]:
    """Labels of the packaged files that hold the same image as ``label`` (itself included), by
    the trainer's own copy rule: ``group_frames`` puts two files in one group when they are copies
    (other encodings, lossy versions, crops)."""
    return [other for other in frames
            if len({image.group for image in group_frames(frames[label] + frames[other], "offline")}) == 1]


def test_calibration_slices_are_never_test_images_and_checks_use_only_test_images():
    """Under the split the shipped model was trained with (trainer/configs/default_qat_detector_down0.json), no
    calibration slice is in the test split (it may be training or validation) and every slice
    `verify` checks on is: the group key is the first copy's label, as trainer.data.sources makes it."""
    data = DataConfig.from_dict(load_config(CONFIGS / "default_qat_detector_down0.json").data)
    entries = offline_dicom_entries()
    frames = {label: read_frames(path, label, ("CT",), data.min_image_side) for label, path in entries}
    frames = {label: found for label, found in frames.items() if found}
    label_of = {path: label for label, path in entries}

    def split(name: str) -> str:
        (path,) = packaged_files((name,))  # the very file calibration or verify reads
        key = f"offline:{min(_copies(label_of[path], frames))}"
        return split_of(key, data.heldout_fraction, data.validation_fraction)

    assert {name: split(name) for name in HELDOUT_CT} == dict.fromkeys(HELDOUT_CT, "test")
    calibration = {name: split(name) for name in CALIBRATION_CT}
    assert "test" not in calibration.values(), calibration


def test_residual_skip_reads_the_float_input(calibrated):
    _, result = calibrated
    model = onnx.load(str(result.path))
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    assert INPUT_NAME in add.input  # not the 8-bit DequantizeLinear copy of the image
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    assert all(producers.get(conv.input[0]) == "DequantizeLinear" for conv in convs)
