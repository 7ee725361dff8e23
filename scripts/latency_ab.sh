#!/usr/bin/env bash
# A/B CPU latency of two ONNX files (e.g. a candidate against the shipped model), measured ABAB
# (interleaved, so that a change in the machine's speed hits both alike): 512^2 batch 1, 2 threads,
# benchmarks.latency each time; prints each run's p50 and the matmul ceiling measured in that run.
#
#   bash scripts/latency_ab.sh A.onnx B.onnx OUT_DIR     (each run's JSON record and log land in OUT_DIR)
set -euo pipefail
if [[ $# -ne 3 ]]; then echo "usage: bash scripts/latency_ab.sh A.onnx B.onnx OUT_DIR" >&2; exit 2; fi
for f in "$1" "$2"; do [[ -f "$f" ]] || { echo "error: not found: $f" >&2; exit 2; }; done
mkdir -p "$3"
A="$(realpath "$1")" B="$(realpath "$2")" OUT="$(realpath "$3")"
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
for i in 1 2; do
  for tag in A B; do
    f=$A; [[ $tag == B ]] && f=$B
    "$PY" -m benchmarks.latency "$f" --sizes 512 --batches 1 --threads 2 --no-dicom --no-process --runs 60 --budget-s 6 --out "$OUT/${tag}${i}.json" > "$OUT/${tag}${i}.log" 2>&1 \
      || { echo "benchmarks.latency failed on $f: see $OUT/${tag}${i}.log" >&2; exit 1; }
    "$PY" - "$OUT/${tag}${i}.json" "$tag$i" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["matmul_ceiling"]
for x in r["latency"]:
    print(sys.argv[2], x["model"], x["size"], x["batch"], "p50_ms", round(x["p50_ms"], 2), "ceiling_gflops", round(c["gflops"], 1),
          "ratio", round(x["p50_ms"] / x["ceiling_bound_ms"], 3) if x.get("ceiling_bound_ms") else None)
PY
  done
done
