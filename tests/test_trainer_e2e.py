"""End to end on CPU: teacher -> distill -> QAT on a tiny in-test dataset; exact reloads,
resume after an interruption, and the QAT model's Q/DQ ONNX export run by ONNX Runtime."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from trainer.checkpoint import load_checkpoint, load_model
from trainer.config import load_config
from trainer.models import create_model
from trainer.train import DataBundle, evaluate, train

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def smooth(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def toy_data() -> DataBundle:
    """Random smooth 'images' with additive noise: patches and two full held-out slices."""
    g = torch.Generator().manual_seed(0)
    clean = smooth(64, 32, g)
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=g)
    held_clean = smooth(2, 44, g)[:, 0]  # 44 is no multiple of 8: exercises pad/crop
    held_noisy = held_clean + 0.05 * torch.randn(held_clean.shape, generator=g)
    heldout = [SimpleNamespace(name=f"toy{i}", modality="CT", degraded=held_noisy[i].numpy(),
                               clean=held_clean[i].numpy(), spec=None) for i in range(2)]
    return DataBundle(torch.utils.data.TensorDataset(noisy, clean), heldout, {"source": "toy"},
                      {"CT": {"kind": "hu_linear"}}, ["CT"])


def logged_losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def assert_reload_exact(path: Path) -> torch.nn.Module:
    model, ckpt = load_model(path)
    assert not model.training
    x = torch.rand(1, 1, 24, 24)
    again, _ = load_model(path)
    assert torch.equal(model(x), again(x))
    # The reloaded weights are exactly the saved ones.
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    return model


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = toy_data()
    results = {
        "teacher": train(load_config(CONFIGS / "tiny_teacher.json"), root / "teacher", data=data),
    }
    results["distill"] = train(load_config(CONFIGS / "tiny_distill.json"), root / "distill",
                               teacher=root / "teacher" / "best.pt", data=data)
    results["qat"] = train(load_config(CONFIGS / "tiny_qat.json"), root / "qat",
                           student=root / "distill" / "best.pt", data=data)
    return root, results


@pytest.mark.slow
def test_stages_train_and_losses_fall(pipeline):
    root, _ = pipeline
    for stage in ("teacher", "distill"):
        losses = logged_losses(root / stage)
        assert np.mean(losses[-2:]) < np.mean(losses[:2]), (stage, losses)


@pytest.mark.slow
def test_reported_scores_are_the_saved_models_scores(pipeline):
    """Each stage's best PSNR is what its best.pt scores on the validation slices; QAT's FP32
    reference is the distilled student it started from; a dozen steps from a residual start keep
    the image (within 1 dB of the noisy input, where a broken model loses tens of dB)."""
    root, results = pipeline
    validation, cfg = toy_data().validation, load_config(CONFIGS / "tiny_qat.json")
    for stage in ("teacher", "distill", "qat"):
        model, _ = load_model(root / stage / "best.pt")
        scores = evaluate(model, validation, cfg, torch.device("cpu"))
        assert results[stage]["best_psnr"] == pytest.approx(scores["psnr"], abs=1e-4), stage
        assert abs(scores["psnr"] - scores["psnr_input"]) < 1.0, (stage, scores)
    qat = results["qat"]
    assert qat["fp32"]["psnr"] == pytest.approx(results["distill"]["best_psnr"], abs=1e-4)
    assert qat["qat_minus_fp32_db"] == pytest.approx(qat["validation"]["psnr"] - qat["fp32"]["psnr"])


@pytest.mark.slow
def test_checkpoints_hold_contract_and_reload_exactly(pipeline):
    root, _ = pipeline
    for stage in ("teacher", "distill", "qat"):
        ckpt = load_checkpoint(root / stage / "best.pt")
        assert ckpt["format"] == "medclear-checkpoint/1" and ckpt["stage"] == stage
        assert ckpt["config"]["stage"] == stage and ckpt["data_summary"] == {"source": "toy"}
        assert ckpt["normalization"] and ckpt["modalities"] == ["CT"]
        assert (ckpt["quantization"] is not None) == (stage == "qat")
        assert_reload_exact(root / stage / "best.pt")
    assert load_checkpoint(root / "qat" / "best.pt")["model_name"] == "student"


@pytest.mark.slow
def test_qat_model_exports_qdq_onnx_that_onnxruntime_runs(pipeline, tmp_path):
    root, _ = pipeline
    model = assert_reload_exact(root / "qat" / "best.pt")
    path = tmp_path / "student.int8.onnx"
    torch.onnx.export(model, torch.rand(1, 1, 32, 32), path, opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["enhanced"],
                      dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "enhanced": {0: "n", 2: "h", 3: "w"}})
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    # Per-channel weight DequantizeLinear nodes carry axis 0; zero points are int8 zeros.
    assert any(a.name == "axis" and a.i == 0 for n in graph.node if n.op_type == "DequantizeLinear" for a in n.attribute)
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    consts.update({i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer})
    zero_points = [consts[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 1, 40, 48), dtype=np.float32)
    out = session.run(None, {"image": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() < 1e-3


class InterruptAfter(torch.utils.data.Dataset):
    """Wraps a dataset and raises KeyboardInterrupt at the n-th item fetched (a Ctrl-C)."""

    def __init__(self, base, n: int) -> None:
        self.base, self.n, self.count = base, n, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        self.count += 1
        if self.count > self.n:
            raise KeyboardInterrupt
        return self.base[i]


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    cfg = load_config(CONFIGS / "tiny_teacher.json")
    data = toy_data()
    train(cfg, tmp_path / "straight", data=data)
    batch = cfg.train.batch_size
    broken = DataBundle(InterruptAfter(data.train_set, 8 * batch), data.validation, data.summary,
                        data.normalization, data.modalities)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(CONFIGS / "tiny_teacher.json"), tmp_path / "resumed", data=broken)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 8
    result = train(load_config(CONFIGS / "tiny_teacher.json"), tmp_path / "resumed", data=data, resume=True)
    assert result["step"] == cfg.train.steps
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stage_needs_its_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="--teacher"):
        train(load_config(CONFIGS / "tiny_distill.json"), tmp_path / "d", data=toy_data())
    with pytest.raises(ValueError, match="--student"):
        train(load_config(CONFIGS / "tiny_qat.json"), tmp_path / "q", data=toy_data())
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(load_config(CONFIGS / "tiny_teacher.json"), tmp_path / "t", data=toy_data(), resume=True)


@pytest.mark.slow
def test_early_stopping_and_time_budget(tmp_path):
    cfg = load_config(CONFIGS / "tiny_teacher.json", ["train.eval_every=3", "train.patience=1", "train.min_delta_db=100"])
    result = train(cfg, tmp_path / "patience", data=toy_data())
    assert result["stopped_early"] and result["step"] == 6  # evals at 3 (best) and 6 (no 100 dB gain)
    cfg = load_config(CONFIGS / "tiny_teacher.json", ["train.max_minutes=1e-5"])
    result = train(cfg, tmp_path / "budget", data=toy_data())
    assert result["out_of_time"] and result["step"] == 1
    assert load_checkpoint(tmp_path / "budget" / "best.pt")["step"] == 1
    # A run cut short at step 2 of a 6-step schedule: evaluated there, LR still on the 6-step cosine.
    cfg = load_config(CONFIGS / "tiny_teacher.json", ["train.steps=6", "train.stop_step=2", "train.eval_every=5",
                                                       "train.log_every=1", "train.warmup_steps=0"])
    result = train(cfg, tmp_path / "cut", data=toy_data())
    assert result["step"] == 2 and load_checkpoint(tmp_path / "cut" / "best.pt")["step"] == 2
    last_lr = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").open() if '"lr"' in line][-1]["lr"]
    assert last_lr > 0.5 * cfg.train.lr  # a 2-step schedule would have decayed to lr * min_lr_ratio by now


@pytest.mark.slow
def test_bf16_adversarial_deep_supervision_and_resume(tmp_path):
    overrides = ["train.amp=bf16", "train.steps=4", "train.eval_every=2", "loss.adversarial=0.2", "loss.l1=0.5",
                 "loss.disc_width=8", 'model.kwargs={"base_width": 4, "depth": 3, "deep_supervision": true}']
    first = train(load_config(CONFIGS / "tiny_teacher.json", overrides), tmp_path, data=toy_data())
    assert first["step"] == 4 and np.isfinite(first["validation"]["psnr"])
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["extra_modules"]["disc_opt"] and any(k.startswith("discriminator.") for k in ckpt["extra_modules"]["recon"])
    longer = train(load_config(CONFIGS / "tiny_teacher.json", overrides + ["train.steps=6"]), tmp_path,
                   data=toy_data(), resume=True)
    assert longer["step"] == 6


@pytest.mark.slow
def test_conv_transpose_weights_quantized_per_output_channel(tmp_path):
    from trainer.checkpoint import save_checkpoint
    from trainer.qat import quantization_info, quantize

    model = create_model("student", widths=[4, 8], stem_stride=2)
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    x = torch.rand(2, 1, 32, 32)
    model = quantize(model, lambda m: m(x))
    assert model.tail.weight_quantizer.axis == 1  # [C_in, C_out, kH, kW]: output channels
    assert model.down[0][0][0].weight_quantizer.axis == 0
    save_checkpoint(tmp_path / "q.pt", model, quantization=quantization_info(model))
    again, _ = load_model(tmp_path / "q.pt")
    assert torch.equal(again(x), model.eval()(x))


def test_slim_checkpoint_drops_resume_state_and_reloads_exactly(pipeline, tmp_path):
    from trainer.checkpoint import RESUME_KEYS, slim_checkpoint

    source = pipeline[0] / "teacher" / "last.pt"
    slim = slim_checkpoint(source, tmp_path / "slim.pt")
    assert not set(RESUME_KEYS) & slim.keys() and "config" in slim
    x = torch.rand(1, 1, 24, 24)
    assert torch.equal(load_model(source)[0](x), load_model(tmp_path / "slim.pt")[0](x))


def test_float_checkpoint_is_the_qat_model_with_quantizers_off(pipeline, tmp_path):
    from compiler.export import _quantizers_disabled
    from trainer.checkpoint import float_checkpoint

    source = pipeline[0] / "qat" / "best.pt"
    written = float_checkpoint(source, tmp_path / "float.pt")
    plain, info = load_model(tmp_path / "float.pt")
    assert info["quantization"] is None and written["stage"] == "distill"
    assert written["metrics"] == {} and written["source_metrics"] == load_checkpoint(source)["metrics"]
    quantized, _ = load_model(source)
    x = torch.rand(1, 1, 24, 24)
    with _quantizers_disabled(quantized):
        assert torch.equal(plain(x), quantized(x))
    assert not torch.equal(plain(x), quantized(x))  # the quantizers were on: a different function
    with pytest.raises(ValueError, match="is not a QAT checkpoint"):
        float_checkpoint(tmp_path / "float.pt", tmp_path / "again.pt")


def test_init_starts_from_a_checkpoint_and_logs_its_starting_point(pipeline, tmp_path, capsys):
    root, _ = pipeline
    start, _ = load_model(root / "distill" / "best.pt")
    # Different widths in the config: --init's model spec wins; KD weights 0 = supervised fine-tuning.
    cfg = load_config(CONFIGS / "tiny_distill.json", ["train.steps=2", "model.kwargs.widths=[2,4]",
                                                      "distill.output_kd=0", "distill.feature_kd=0",
                                                      "loss.noise_balance=0.01"])
    train(cfg, tmp_path / "ft", teacher=root / "teacher" / "best.pt", data=toy_data(), init=root / "distill" / "best.pt")
    tuned, ckpt = load_model(tmp_path / "ft" / "last.pt")
    assert ckpt["config"]["model"] == {"name": start.model_name, "kwargs": dict(start.model_kwargs)}
    assert "the config's widths not used" in capsys.readouterr().err  # said, not silently replaced
    records = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert records[0]["init"].endswith("best.pt") and records[1]["step"] == 0 and "psnr" in records[1]["eval"]
    assert not any("kd_out" in r for r in records)  # the teacher was not run
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert changed  # it trained from there
    with pytest.raises(ValueError, match="--init"):
        train(load_config(CONFIGS / "tiny_qat.json"), tmp_path / "q", data=toy_data(), init=root / "distill" / "best.pt",
              student=root / "distill" / "best.pt")


def test_evaluation_reports_each_source_of_a_modality_apart():
    """A CT mean over real scans and phantoms can hide a loss on the scans: both are reported."""
    data, cfg = toy_data(), load_config(CONFIGS / "tiny_qat.json")
    scan, phantom = data.validation
    scan.name, phantom.name = "offline:toy-scan#0", "phantom:validation-0"
    model = create_model("student", widths=[4, 8, 16, 32])
    scores = evaluate(model, [scan, phantom], cfg, torch.device("cpu"))
    alone = {name: evaluate(model, [image], cfg, torch.device("cpu"))["psnr"]
             for name, image in (("offline", scan), ("phantom", phantom))}
    assert scores["psnr_CT_offline"] == pytest.approx(alone["offline"])
    assert scores["psnr_CT_phantom"] == pytest.approx(alone["phantom"])
    assert scores["psnr_CT"] == pytest.approx((alone["offline"] + alone["phantom"]) / 2)
    assert "psnr_CT_offline" not in evaluate(model, [scan], cfg, torch.device("cpu"))  # one source: no split
