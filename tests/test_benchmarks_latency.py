"""Smoke test of ``python -m benchmarks.latency`` on tiny models and settings, plus the FLOP
counter and the target judgements it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from benchmarks import latency, markdown
from benchmarks.flops import onnx_conv_flops
from benchmarks.synthetic import conv_stack, save_conv_stack
from benchmarks.targets import TARGETS, judge
from benchmarks.timing import summarize, timed_runs
from runtime.model_contract import ModelContract


def _int8_copy(fp32: Path, out: Path) -> Path:
    """Static Q/DQ INT8 (symmetric, per-channel) of ``fp32`` with ONNX Runtime's quantizer."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": np.random.default_rng(i).random((1, 1, 32, 32), dtype=np.float32)}
                                 for i in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    model = onnx.load(str(out))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, ModelContract(size_multiple=1, precision="int8", model_name="tiny").to_metadata())
    onnx.save(model, str(out))
    return out


def test_conv_flops_match_the_formula(tmp_path: Path) -> None:
    path = save_conv_stack(tmp_path / "m.onnx", channels=8, layers=3)
    # 3x3 convs 1->8, 8->8, 8->1 at 2 FLOPs per multiply-add, per output pixel, batch 2
    expected = 2 * 9 * (1 * 8 + 8 * 8 + 8 * 1) * 2 * 40 * 48
    assert onnx_conv_flops(path, (2, 1, 40, 48)) == expected


def test_timed_runs_stop_at_the_budget_but_not_below_the_minimum() -> None:
    import time

    calls = []

    def run() -> dict[str, float]:
        calls.append(1)
        time.sleep(0.01)
        return {"compute": 0.01}

    samples = timed_runs(run, warmup=2, runs=1000, budget_s=0.05, min_runs=3)
    assert 3 <= len(samples) < 50 and len(calls) == len(samples) + 2
    assert all(s["total"] >= 0.01 for s in samples)
    assert len(timed_runs(run, warmup=0, runs=1000, budget_s=0.0, min_runs=4)) == 4
    stats = summarize(samples)["total"]
    assert 10.0 <= stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]


def test_targets_report_pass_miss_and_margin() -> None:
    miss = judge("int8_512_b1_p50_ms", 75.0, "m")
    assert miss["status"] == "miss" and miss["margin"] == pytest.approx(-15.0) and "misses by 15" in miss["note"]
    assert judge("speedup_vs_teacher", 12.0, "m")["status"] == "pass"
    assert judge("speedup_vs_teacher", 8.0, "m")["margin"] == pytest.approx(-2.0)
    assert judge("cold_start_s", None, "m", "no runtime")["status"] == "not measured"
    assert TARGETS["int8_size_fraction"].limit == 0.30 and TARGETS["dicom_ct1024_e2e_s"].limit == 0.8


@pytest.mark.slow
def test_latency_smoke_writes_json_and_png(tmp_path: Path) -> None:
    fp32 = tmp_path / "tiny.fp32.onnx"
    onnx.save(conv_stack(channels=8, layers=3, contract=ModelContract(size_multiple=1, model_name="tiny")), str(fp32))
    int8 = _int8_copy(fp32, tmp_path / "tiny.int8.onnx")
    out, png = tmp_path / "latency.json", tmp_path / "latency.png"
    status = latency.main([
        str(int8), "--teacher", "arch:student:width=4,depth=1", "--sizes", "64,512", "--batches", "1",
        "--teacher-sizes", "512", "--runs", "3", "--warmup", "1", "--budget-s", "0.1", "--min-runs", "2",
        "--threads", "1", "--cold-repeats", "1", "--ceiling-s", "0.2", "--out", str(out), "--plot", str(png),
    ])
    assert status == 0
    assert png.stat().st_size > 1000
    record = json.loads(out.read_text())
    assert record["machine"]["cpu"] and record["machine"]["usable_cores"] >= 1
    assert record["libraries"]["onnxruntime"] and record["matmul_ceiling"]["gflops"] > 0
    assert len(record["models"]["tiny.int8.onnx"]["file"]["sha256"]) == 64
    rows = {(r["model"], r["size"]): r for r in record["latency"]}
    assert set(rows) == {("tiny.int8.onnx", 64), ("tiny.int8.onnx", 512), ("arch:student:width=4,depth=1", 512)}
    row = rows[("tiny.int8.onnx", 512)]
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["images_per_s"] > 0
    assert {"preprocess", "compute", "postprocess", "total"} <= set(row["stages"])
    assert row["flops"] == onnx_conv_flops(int8, (1, 1, 512, 512)) and row["achieved_gflops"] > 0
    dicom = {d["input_key"]: d for d in record["dicom_end_to_end"] if d["model"] == "tiny.int8.onnx"}
    assert dicom["ct512"]["p50_s"] > 0 and dicom["ct1024"]["rows"] == 1024
    assert set(dicom["ct1024"]["stages_p50_ms"]) == {"read", "prepare", "infer", "restore", "write"}
    process = record["processes"]
    assert process["cold_start"][0]["wall_s"] > 0, process["cold_start"][0]["error"]
    assert process["peak_memory"][0]["peak_rss_mb"] > 50, process["peak_memory"][0]["error"]
    judged = {(t["key"], t["subject"].split(" ")[0]): t for t in record["targets"]}
    for key in ("int8_512_b1_p50_ms", "speedup_vs_teacher", "dicom_ct1024_e2e_s", "int8_size_fraction",
                "cold_start_s", "peak_memory_xray2k_mb"):
        target = judged[(key, "tiny.int8.onnx")]  # the size target reads tiny.fp32.onnx beside it
        assert target["status"] in ("pass", "miss") and target["margin"] is not None, target
    assert judged[("gflops_fraction_of_matmul_ceiling", "tiny.int8.onnx")]["measured"] > 0
    assert [c["key"] for c in record["claims"]] == ["trt_2ms", "ct1024_0p8s", "int8_75pct_smaller", "distilled_3x_faster"]
    assert record["claims"][0]["status"] == "not measurable here"
    text = markdown.latency_markdown(record)
    assert "| tiny.int8.onnx | 512 | 1 |" in text and "| seed claim |" in text
