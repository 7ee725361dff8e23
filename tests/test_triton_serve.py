"""``python -m benchmarks.serve`` end to end on the local server: a short sweep of both models."""

from __future__ import annotations

import json

import pytest
from runtime_fixtures import make_smoothing_model
from triton_fixtures import require_server

from benchmarks.markdown import read_marked_section
from benchmarks.serve import BATCHING, LOCAL, SINGLE, main

import tritonclient.grpc  # noqa: F401  (medclear[triton], part of the test extra)


def test_sweep_reports_throughput_percentiles_batch_and_gain(tmp_path, capsys):
    require_server()
    model = make_smoothing_model(tmp_path / "smooth.onnx")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    assert main(["--model", str(model), "--concurrency", "1,3", "--duration", "0.6", "--warmup", "0.2",
                 "--size", "64", "--out", str(tmp_path / "serve.json"), "--into", str(doc)]) == 0
    record = json.loads((tmp_path / "serve.json").read_text())
    assert [(r["model"], r["concurrency"]) for r in record["rows"]] == [
        (LOCAL, 1), (BATCHING, 1), (BATCHING, 3), (SINGLE, 1), (SINGLE, 3)]
    for row in record["rows"]:
        assert row["requests"] > 0 and row["throughput"] > 0 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert all(r["mean_batch"] == 1 for r in record["rows"] if r["model"] in (SINGLE, LOCAL))
    assert [g["concurrency"] for g in record["gains"]] == [1, 3] and record["machine"]["cpu"]
    section = read_marked_section(doc, "serve")
    assert "| model | clients | images/s | p50 ms | p95 ms | p99 ms | server batch |" in section
    assert section in capsys.readouterr().out
    assert main(["--url", "127.0.0.1:1", "--duration", "0.1", "--warmup", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "serve: error: the server failed" in capsys.readouterr().err


def test_a_noise_map_model_is_served_two_channel_requests(tmp_path):
    from runtime.model_contract import NOISE_MAP, ModelContract

    require_server()
    model = make_smoothing_model(tmp_path / "map.onnx", contract=ModelContract(noise_conditioning=NOISE_MAP))
    assert main(["--model", str(model), "--concurrency", "1", "--baseline-name", "", "--duration", "0.3",
                 "--warmup", "0.1", "--size", "32", "--out", str(tmp_path / "serve.json")]) == 0
    record = json.loads((tmp_path / "serve.json").read_text())
    assert [(r["model"], r["requests"] > 0) for r in record["rows"]] == [(LOCAL, True), (BATCHING, True)]
