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
from benchmarks.runners import Runner
from benchmarks.synthetic import conv_stack, save_conv_stack
from benchmarks.targets import TARGETS, judge
from benchmarks.timing import summarize, timed_runs
from runtime.backends import Backend, InputConstraints
from runtime.model_contract import INPUT_NAME, ModelContract


def _int8_copy(fp32: Path, out: Path) -> Path:
    """Static Q/DQ INT8 (symmetric, per-channel) of ``fp32`` with ONNX Runtime's quantizer; its
    contract takes CT and CR, as the process timings (a CT slice, a CR radiograph) need."""
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
    contract = ModelContract(size_multiple=1, precision="int8", model_name="tiny", modalities=("CT", "CR"))
    onnx.helper.set_model_props(model, contract.to_metadata())
    onnx.save(model, str(out))
    return out


class ProfileBackend(Backend):
    """An engine stand-in: the identity, taking only its profile's shapes (batch 1..4, sides 16..64)."""

    kind = "tensorrt"

    def __init__(self) -> None:
        super().__init__("profile.engine")
        self._contract = ModelContract(size_multiple=8, precision="fp16", model_name="profile")
        self._constraints = InputConstraints(INPUT_NAME, 8, (1, 1, 16, 16), (4, 1, 64, 64))
        self.is_open = True

    def _open(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def _close(self) -> None:
        pass


def test_shapes_outside_an_engines_profile_are_skipped_rows_not_a_crash(tmp_path, monkeypatch) -> None:
    """`--batches 1,4,8` on an engine built for batch 4 (and a size above its profile) times what
    fits and lists the rest as skipped with the reason; an ONNX model (dynamic axes) takes batch 8."""
    onnx_model = tmp_path / "tiny.onnx"
    onnx.save(conv_stack(channels=4, layers=2, contract=ModelContract(size_multiple=1, model_name="tiny")),
              str(onnx_model))
    engine = Runner(spec="profile.engine", label="profile.engine", kind="tensorrt", engine="fake", precision="fp16",
                    size_multiple=8, backend=ProfileBackend())
    real_open = latency.open_runner
    monkeypatch.setattr(latency, "open_runner", lambda spec, threads: engine if spec == engine.spec
                        else real_open(spec, threads))
    args = latency.parse_args([str(onnx_model), "--runs", "1", "--warmup", "0", "--min-runs", "1", "--budget-s", "0"])
    rows, skipped, _ = latency.measure_models(
        [(engine.spec, [32, 128], [1, 4, 8]), (str(onnx_model), [32], [8])], args)
    assert {(r["model"], r["size"], r["batch"]) for r in rows} == {
        ("profile.engine", 32, 1), ("profile.engine", 32, 4), ("tiny.onnx", 32, 8)}
    assert {(s["size"], s["batch"]) for s in skipped} == {(32, 8), (128, 1), (128, 4), (128, 8)}
    reason = next(s["reason"] for s in skipped if (s["size"], s["batch"]) == (32, 8))
    assert reason.startswith("size 32, batch 8: input shape [8, 1, 32, 32] outside the model's range")
    record = {"latency": [], "skipped": skipped, "targets": [], "matmul_ceiling": {"gflops": 1.0, "threads": 1},
              "machine": {"cpu": "x", "usable_cores": 1}, "libraries": {}, "created_utc": "now"}
    assert f"| profile.engine | {reason} |" in markdown.latency_markdown(record)


def test_a_named_model_file_that_is_missing_stops_with_its_name(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "typo.int8.onnx"
    with pytest.raises(SystemExit) as stopped:
        latency.parse_args([str(missing)])
    assert stopped.value.code == 2
    assert f"model file not found: {missing}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        latency.parse_args(["--teacher", str(tmp_path / "teacher.pt")])
    # Architectures are not files.
    assert latency.parse_args(["--teacher", "arch:unetpp"]).teacher == "arch:unetpp"
    assert latency.parse_args(["arch:student:width=4,depth=1"]).models == ["arch:student:width=4,depth=1"]


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


def test_a_noise_map_model_is_timed_with_its_noise_map_and_counted_at_two_channels(tmp_path: Path) -> None:
    from onnx_fixtures import write_tiny_onnx
    from runtime.model_contract import NOISE_MAP

    model = write_tiny_onnx(tmp_path / "map.onnx", noise_conditioning=NOISE_MAP)  # input [N, 2, H, W]
    args = latency.parse_args([str(model), "--runs", "1", "--warmup", "0", "--min-runs", "1", "--budget-s", "0"])
    rows, skipped, _ = latency.measure_models([(str(model), [30], [2])], args)
    assert not skipped and [(r["size"], r["batch"]) for r in rows] == [(30, 2)]
    assert rows[0]["flops"] == onnx_conv_flops(model, (2, 2, 32, 32))  # padded to the size multiple 4


def test_models_released_for_other_modalities_are_not_timed_on_ct_or_the_radiograph(tmp_path, capsys):
    """The DICOM and process timings run CT slices and a CR radiograph: a model whose contract
    refuses them (the MR x2 model) is left out with a line, not timed doing nothing."""
    import argparse

    from benchmarks.latency import covers, measure_dicom, measure_processes
    from onnx_fixtures import write_tiny_sr_onnx

    mr_only = str(write_tiny_sr_onnx(tmp_path / "mr.onnx", modalities=("MR",)))
    any_modality = str(write_tiny_sr_onnx(tmp_path / "any.onnx", modalities=("*",)))
    assert not covers(mr_only, "CT") and covers(mr_only, "MR") and covers(any_modality, "CR")
    args = argparse.Namespace(threads=1, budget_s=1.0, runs=1, min_runs=1, cold_repeats=1)
    assert measure_dicom([mr_only], args, tmp_path) == []
    processes = measure_processes([mr_only], args)
    assert processes["cold_start"] == [] and processes["peak_memory"] == []
    err = capsys.readouterr().err
    assert "mr.onnx: not released for CT" in err and "mr.onnx: not released for both CT and CR" in err
