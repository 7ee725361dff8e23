"""x2 super-resolution through the compiler (issue #15): export, INT8, calibration, verification,
held-out quality, TensorRT build and backend (on the fakes), Triton repository."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from fakes.machine import FakeMachine, build_engine, install_machine
from onnx_fixtures import write_tiny_onnx, write_tiny_sr_onnx
from torch import nn

from compiler.__main__ import main as compiler_main
from compiler.calibrate import quantize
from compiler.errors import CompilerError
from compiler.export import FP32_MAX_ABS, INT8_MAX_ABS, INT8_MEAN_ABS, contract_for, export_checkpoint, export_model
from compiler.onnx_io import cpu_session, qdq_summary, read_contract
from compiler.quality import HeldoutPair, heldout_task, psnr_drop, psnr_vs_clean
from compiler.samples import CALIBRATION_CT, packaged_files
from compiler.triton_repo import write_repository
from compiler.verify import verify_onnx
from runtime import pipeline
from runtime.backends import BackendError
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.tensorrt_backend import TensorRTBackend
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract
from runtime.normalization import NormalizationSpec
from runtime.resample import nearest

NORMALIZATION = {"CT": NormalizationSpec().to_dict(), "*": NormalizationSpec(kind="percentile").to_dict()}
PROFILE = ((1, 1, 16, 16), (1, 1, 32, 32), (2, 1, 64, 48))


def _sr_student(seed: int = 0, base: str = "nearest"):
    """An sr2_student whose tail (zero at initialization) does something."""
    from trainer.models import create_model

    torch.manual_seed(seed)
    model = create_model("sr2_student", width=8, blocks=2, base=base)
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 0.05)
        model.tail.bias.normal_(0.0, 0.01)
    return model


def _save(path, model, **info):
    from trainer.checkpoint import save_checkpoint

    save_checkpoint(path, model, normalization=NORMALIZATION, modalities=["CT", "MR"],
                    data_summary={"task": "sr2"}, **info)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sr-export")
    model = _sr_student()
    (result,) = export_checkpoint(_save(folder / "sr.pt", model, stage="distill"), folder / "onnx")
    return model, result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sr-tiny")
    return {"sr": write_tiny_sr_onnx(folder / "sr.fp32.onnx", width=6),
            "denoise": write_tiny_onnx(folder / "dn.fp32.onnx", size_multiple=1)}


def test_contract_takes_the_models_scale():
    contract = contract_for(_sr_student(), {"normalization": NORMALIZATION}, "fp32", "")
    assert (contract.scale, contract.task, contract.size_multiple) == (2, "sr2", 1)
    assert ModelContract.from_metadata(contract.to_metadata()).scale == 2


def test_sr_export_has_scaled_output_axes_and_matches_torch(exported):
    model, result = exported
    graph = onnx.load(str(result.path))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (graph.graph.input[0], graph.graph.output[0])]
    assert dims == [["N", 1, "H", "W"], ["N", 1, "H*2", "W*2"]]
    assert {check.input_name for check in result.checks} >= {"random", "dicom:CT_small.dcm"}
    assert all(check.max_abs <= FP32_MAX_ABS for check in result.checks)
    batch = np.random.default_rng(4).random((2, 1, 21, 34), dtype=np.float32)
    (got,) = cpu_session(result.path).run([OUTPUT_NAME], {INPUT_NAME: batch})
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    assert got.shape == (2, 1, 42, 68)
    assert np.abs(got - expected).max() <= FP32_MAX_ABS
    assert np.abs(got - nearest(batch, 2)).max() > 1e-3  # the tail really adds detail


@pytest.mark.parametrize("base", ["lanczos3", "lanczos8"])  # 2-D kernels; two 1-D passes (a grouped Conv)
def test_lanczos_base_student_exports_fp32_and_int8_that_match(tmp_path, base):
    from trainer.qat import quantization_info, quantize as qat_quantize

    model = _sr_student(base=base)
    (fp32,) = export_checkpoint(_save(tmp_path / "sr.pt", model, stage="distill"), tmp_path / "fp32")
    batch = np.random.default_rng(5).random((1, 1, 19, 26), dtype=np.float32)
    (got,) = cpu_session(fp32.path).run([OUTPUT_NAME], {INPUT_NAME: batch})
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    assert np.abs(got - expected).max() <= FP32_MAX_ABS
    assert [n.op_type for n in onnx.load(str(fp32.path)).graph.node].count("DepthToSpace") == 1  # shared

    def calibrate(m):
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):
            m(torch.rand(2, 1, 32, 32, generator=generator))

    quantized = qat_quantize(model, calibrate)
    checkpoint = _save(tmp_path / "sr.qat.pt", quantized, stage="qat", quantization=quantization_info(quantized))
    _, int8 = export_checkpoint(checkpoint, tmp_path / "int8")
    assert qdq_summary(onnx.load(str(int8.path))).is_quantized
    assert all(c.max_abs <= INT8_MAX_ABS and c.mean_abs <= INT8_MEAN_ABS for c in int8.checks)


def test_exported_sr_model_runs_in_the_runtime_at_twice_the_size(exported):
    _, result = exported
    assert read_contract(onnx.load(str(result.path))).scale == 2
    with pipeline.open_model(result.path, task="sr2") as backend:
        out = pipeline.enhance_values(backend, np.full((30, 40), 50.0, np.float32), "CT")
    assert out.shape == (60, 80)


def test_export_refuses_a_model_whose_output_contradicts_its_scale(tmp_path):
    class Claims(nn.Module):
        scale, size_multiple, model_name = 2, 1, "liar"

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    with pytest.raises(CompilerError, match="output shape .* at scale 2"):
        export_model(Claims(), {"normalization": NORMALIZATION}, tmp_path)


@pytest.mark.slow
def test_qat_sr_student_exports_int8_qdq(tmp_path):
    from trainer.qat import quantization_info, quantize as qat_quantize

    def calibrate(m):
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):
            m(torch.rand(2, 1, 32, 32, generator=generator))

    model = qat_quantize(_sr_student(), calibrate)
    checkpoint = _save(tmp_path / "sr.qat.pt", model, stage="qat", quantization=quantization_info(model))
    fp32, int8 = export_checkpoint(checkpoint, tmp_path / "onnx")
    summary = qdq_summary(onnx.load(str(int8.path)))
    assert summary.is_quantized and summary.per_channel_weights > 0 and not summary.nonzero_zero_points
    assert all(c.max_abs <= INT8_MAX_ABS and c.mean_abs <= INT8_MEAN_ABS for c in int8.checks)
    assert read_contract(onnx.load(str(int8.path))).scale == 2
    report = verify_onnx(int8.path, fp32.path)  # on real CT frames, at the output size
    assert report.passed and len(report.inputs) >= 2


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("sr-calib")
    for path in packaged_files(CALIBRATION_CT):
        (folder / path.name).symlink_to(path)
    out = folder / "sr.int8.onnx"
    return quantize(tiny["sr"], folder, out, max_side=96)


def test_calibrated_sr_model_is_int8_at_twice_the_size_and_verifies(calibrated, tiny):
    assert calibrated.images > 0 and calibrated.quantize_nodes > 0
    int8 = onnx.load(str(calibrated.path))
    assert read_contract(int8).scale == 2 and read_contract(int8).precision == "int8"
    # Resize and the residual Add read the float image, not an 8-bit copy of it.
    float_readers = [n for n in int8.graph.node if n.op_type in ("Resize", "Add") and INPUT_NAME in n.input]
    assert [n.op_type for n in float_readers] == ["Resize"]
    report = verify_onnx(calibrated.path, tiny["sr"])
    assert report.passed and report.min_psnr_db > 35
    assert all(item.shape[1] == 1 for item in report.inputs)


def test_cli_verify_heldout_uses_the_sr_pairs(calibrated, tiny, monkeypatch, capsys):
    import compiler.quality as quality

    clean = np.random.default_rng(5).normal(40, 20, (32, 48)).astype(np.float32)
    pair = HeldoutPair("phantom sr2_area", "CT", clean.reshape(16, 2, 24, 2).mean(axis=(1, 3)), clean, 4095.0)
    asked = []
    monkeypatch.setattr(quality, "heldout_pairs", lambda modalities, task: asked.append(task) or [pair])
    assert compiler_main(["verify", "--onnx", str(calibrated.path), "--reference", str(tiny["sr"]), "--heldout"]) == 0
    assert asked == ["sr2"] and "phantom sr2_area" in capsys.readouterr().out


def test_verify_refuses_models_of_different_scales(tiny):
    with pytest.raises(CompilerError, match="scale 2 .sr2.*scale 1 .denoise.*its own export"):
        verify_onnx(tiny["sr"], tiny["denoise"])


def test_heldout_quality_compares_with_the_high_resolution_image(tiny):
    clean = np.random.default_rng(3).normal(40, 20, (48, 64)).astype(np.float32)
    low = clean.reshape(24, 2, 32, 2).mean(axis=(1, 3))
    pair = HeldoutPair("phantom sr2_area", "CT", low, clean, 4095.0)
    (row,) = psnr_drop(tiny["sr"], tiny["sr"], [pair])
    assert np.isfinite(row.psnr_fp32) and row.drop == 0
    with pytest.raises(CompilerError, match="super-resolution model is scored on the SR held-out pairs"):
        psnr_vs_clean(clean, HeldoutPair("denoise pair", "CT", clean, low, 4095.0))
    assert heldout_task(ModelContract(scale=2)) == "sr2" and heldout_task(ModelContract()) == "denoise"
    with pytest.raises(CompilerError, match="no held-out set for a x3 model"):
        heldout_task(ModelContract(scale=3))


def test_trainer_sr_heldout_pairs_score_the_output_against_the_high_resolution_image(tiny):
    from compiler.quality import heldout_pairs

    pairs = heldout_pairs(("CT",), heldout_task(read_contract(onnx.load(str(tiny["sr"])))))[:2]
    assert pairs and all(p.clean.shape == (2 * p.degraded.shape[0], 2 * p.degraded.shape[1]) for p in pairs)
    rows = psnr_drop(tiny["sr"], tiny["sr"], pairs)
    assert len(rows) == len(pairs) and all(20 < row.psnr_fp32 < 80 for row in rows)


@pytest.fixture()
def machine(monkeypatch) -> FakeMachine:
    return install_machine(monkeypatch)


def test_tensorrt_sr_engine_gets_a_four_times_larger_output_buffer(machine, tiny, tmp_path, capsys):
    engine = tmp_path / "sr.engine"
    low, opt, high = ("x".join(map(str, shape)) for shape in PROFILE)
    assert compiler_main(["build", "--onnx", str(tiny["sr"]), "--precision", "fp16", "--out", str(engine),
                          "--min", low, "--opt", opt, "--max", high]) == 0
    assert "x2 output up to 2x1x128x96" in capsys.readouterr().out
    input_bytes = 2 * 64 * 48 * 4
    with TensorRTBackend(engine, use_cuda_graphs=True) as backend, OnnxRuntimeBackend(tiny["sr"]) as reference:
        assert backend.contract.scale == 2
        for seed, shape in enumerate([(1, 1, 16, 16), (2, 1, 64, 48), (1, 1, 40, 24), (2, 1, 64, 48)]):
            batch = np.random.default_rng(seed).random(shape, dtype=np.float32)
            out = backend.infer(batch)
            assert out.shape == (shape[0], 1, 2 * shape[2], 2 * shape[3])
            np.testing.assert_allclose(out, reference.infer(batch), atol=1e-5)
    sizes = [c.detail["size"] for c in machine.gpu.calls if c.name == "cudaMalloc"]
    assert sizes == [input_bytes, 4 * input_bytes]
    assert machine.gpu.leaks() == {}


def test_tensorrt_engine_larger_than_its_contract_says_is_refused_before_copying(machine, tmp_path):
    lying = write_tiny_sr_onnx(tmp_path / "lying.onnx", scale=1, task="denoise")
    engine = build_engine(tmp_path / "lying.engine", lying, PROFILE)
    with TensorRTBackend(engine) as backend:
        machine.gpu.calls.clear()
        with pytest.raises(BackendError, match="does not match the contract's scale 1"):
            backend.infer(np.zeros((1, 1, 32, 32), np.float32))
        assert not [c for c in machine.gpu.calls if c.name in ("cudaMemcpyAsync", "execute_async_v3")]


def test_triton_repository_carries_the_scale(tiny, tmp_path):
    result = write_repository([tiny["sr"]], tmp_path / "repo")
    parameters = {entry["key"]: entry["value"]["string_value"] for entry in result.config["parameters"]}
    assert parameters["medclear.scale"] == "2" and parameters["medclear.task"] == "sr2"
    assert result.config["output"][0]["dims"] == [1, -1, -1]  # H and W are dynamic: 2H x 2W fits


def test_export_can_release_a_model_for_fewer_modalities_and_the_runtime_refuses_the_rest(tmp_path):
    checkpoint = _save(tmp_path / "sr.pt", _sr_student(), stage="distill")
    (result,) = export_checkpoint(checkpoint, tmp_path / "onnx", modalities=["ct"])
    assert read_contract(onnx.load(str(result.path))).modalities == ("CT",)
    with pipeline.open_model(result.path, task="sr2") as backend:
        assert pipeline.enhance_values(backend, np.full((8, 8), 50.0, np.float32), "CT").shape == (16, 16)
        with pytest.raises(pipeline.ModalityError, match="MR"):
            pipeline.enhance_values(backend, np.full((8, 8), 50.0, np.float32), "MR")
    with pytest.raises(CompilerError, match="DX not among the trained ones"):
        export_checkpoint(checkpoint, tmp_path / "onnx2", modalities=["CT", "DX"])
