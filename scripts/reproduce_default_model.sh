#!/usr/bin/env bash
# Reproduce the shipped default model end to end on a CPU (about 1-2 hours on 2 cores):
# teacher -> distilled student -> QAT -> ONNX fp32 + int8 -> quality and latency records ->
# model card. Every number in models/MODEL_CARD.md comes from the files this writes.
#
#   bash scripts/reproduce_default_model.sh [RUN_DIR]     (default RUN_DIR: runs/default)
#
# The trainer configs (trainer/configs/default_*.json) hold every setting: fixed step counts,
# not a time budget, so the result does not depend on the machine's speed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-runs/default}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$RUN"

echo "== 1/6 teacher (U-Net++ base width 16, depth 4)"
"$PY" -m trainer teacher --config trainer/configs/default_teacher.json --out "$RUN/teacher"

echo "== 2/6 distill student from the teacher"
"$PY" -m trainer distill --config trainer/configs/default_distill.json --out "$RUN/student" \
    --teacher "$RUN/teacher/best.pt"

echo "== 3/6 quantization-aware training (ModelOpt INT8)"
"$PY" -m trainer qat --config trainer/configs/default_qat.json --out "$RUN/qat" \
    --student "$RUN/student/best.pt"

echo "== 4/6 export ONNX fp32 + int8 into models/"
cp "$RUN/qat/best.pt" models/medclear_student.qat.pt
cp "$RUN/teacher/best.pt" models/medclear_teacher.pt
"$PY" -m compiler export --checkpoint models/medclear_student.qat.pt --out-dir models --name medclear_student
"$PY" -m compiler verify --onnx models/medclear_student.int8.onnx --reference models/medclear_student.fp32.onnx

echo "== 5/6 quality and latency on the held-out set / this machine"
"$PY" -m benchmarks.quality --teacher models/medclear_teacher.pt --threads 1 --out models/quality.json --grid docs/images/quality_crops.png
"$PY" -m benchmarks.latency --teacher models/medclear_teacher.pt --batches 1,2 --out models/latency.json --plot docs/images/latency.png
"$PY" -m benchmarks.regression --update --threads 1  # CI's latency baseline follows the new models

echo "== 6/6 model card"
"$PY" scripts/make_model_card.py --run "$RUN" --quality models/quality.json --latency models/latency.json
