#!/usr/bin/env bash
# Make a QAT checkpoint the shipped default model and regenerate what depends on it (about 8 minutes
# on 2 cores): slim it into models/medclear_student.qat.pt, export ONNX fp32 + int8 and verify them,
# run the shipped-model gate (tests/test_shipped_model.py), the dose curve on the test split, the
# latency record and CI's latency baseline. The model card is the caller's next step
# (scripts/make_model_card.py): it reads the training runs, which only the caller knows.
#
#   bash scripts/ship_default_model.sh QAT_CHECKPOINT
#
# Ship only a candidate its rule chose on validation (docs/TRAINING.md, scripts/score_candidate.sh):
# the dose curve this writes is the test split's, reported and never selected on.
set -euo pipefail
if [[ $# -ne 1 || ! -f "$1" ]]; then
    echo "usage: bash scripts/ship_default_model.sh QAT_CHECKPOINT  (an existing QAT best.pt)" >&2
    exit 2
fi
QAT="$(realpath "$1")"  # as the caller gave it, before moving to the repository root
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

echo "== export ONNX fp32 + int8 into models/"
"$PY" -m trainer.checkpoint slim "$QAT" models/medclear_student.qat.pt  # weights + config, no optimizer
"$PY" -m compiler export --checkpoint models/medclear_student.qat.pt --out-dir models --name medclear_student
"$PY" -m compiler verify --onnx models/medclear_student.int8.onnx --reference models/medclear_student.fp32.onnx

echo "== the shipped-model gate"
"$PY" -m pytest -q tests/test_shipped_model.py

echo "== quality (dose curve on the test split) and latency on this machine"
"$PY" -m benchmarks.quality --dose-curve models/medclear_student.fp32.onnx models/medclear_student.int8.onnx \
    --teacher models/medclear_teacher.pt --threads 2 --out models/quality.json \
    --plot docs/images/dose_curve.png --grid docs/images/dose_curve_crops.png --markdown docs/BENCHMARKS.md
"$PY" -m benchmarks.latency --teacher models/medclear_teacher.pt --batches 1,2 --out models/latency.json --plot docs/images/latency.png
"$PY" -m benchmarks.markdown models/latency.json --into docs/BENCHMARKS.md  # its generated latency section
"$PY" -m benchmarks.regression --update --threads 1  # CI's latency baseline follows the new models
