#!/usr/bin/env bash
# Make a QAT checkpoint the shipped default model, and another the MR denoiser, and regenerate what
# depends on them (about 10 minutes on 2 cores): slim each into models/ (medclear_student.qat.pt,
# medclear_student_mr.qat.pt), export ONNX fp32 + int8 and verify them, run the shipped-model gate
# (tests/test_shipped_model.py), the dose curve on the test split (MR rows by the MR denoiser, as a run
# that names no model routes them), the sample's noisy-reference check (benchmarks.noisy_reference: its table in
# docs/BENCHMARKS.md is the caller's to update), the latency record and CI's latency baseline. The model card is the
# caller's next step (scripts/make_model_card.py): it reads the training runs, which only the caller knows.
#
#   bash scripts/ship_default_model.sh QAT_CHECKPOINT MR_QAT_CHECKPOINT
#
# Ship only candidates their rules chose on validation (docs/TRAINING.md, scripts/score_candidate.sh):
# the dose curve this writes is the test split's, reported and never selected on. Export is deterministic:
# an unchanged checkpoint gives byte-identical ONNX files.
set -euo pipefail
if [[ $# -ne 2 || ! -f "$1" || ! -f "$2" ]]; then
    echo "usage: bash scripts/ship_default_model.sh QAT_CHECKPOINT MR_QAT_CHECKPOINT  (existing QAT checkpoints)" >&2
    exit 2
fi
QAT="$(realpath "$1")" MR_QAT="$(realpath "$2")"  # as the caller gave them, before moving to the repository root
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

for pair in "$QAT medclear_student" "$MR_QAT medclear_student_mr"; do
    read -r checkpoint name <<< "$pair"
    echo "== export ONNX fp32 + int8 of $name into models/"
    "$PY" -m trainer.checkpoint slim "$checkpoint" "models/$name.qat.pt"  # weights + config, no optimizer
    "$PY" -m compiler export --checkpoint "models/$name.qat.pt" --out-dir models --name "$name"
    "$PY" -m compiler verify --onnx "models/$name.int8.onnx" --reference "models/$name.fp32.onnx"
done

echo "== the shipped-model gate"
"$PY" -m pytest -q tests/test_shipped_model.py

echo "== quality (dose curve on the test split) and latency on this machine"
"$PY" -m benchmarks.quality --dose-curve models/medclear_student.fp32.onnx models/medclear_student.int8.onnx \
    --mr-models models/medclear_student_mr.fp32.onnx models/medclear_student_mr.int8.onnx \
    --teacher models/medclear_teacher.pt --threads 2 --out models/quality.json \
    --plot docs/images/dose_curve.png --grid docs/images/dose_curve_crops.png --markdown docs/BENCHMARKS.md
"$PY" -m benchmarks.noisy_reference --threads 2 --out benchmarks/noisy_reference_record.json
"$PY" -m benchmarks.latency --teacher models/medclear_teacher.pt --batches 1,2 --out models/latency.json --plot docs/images/latency.png
"$PY" -m benchmarks.markdown models/latency.json --into docs/BENCHMARKS.md  # its generated latency section
"$PY" -m benchmarks.regression --update --threads 1  # CI's latency baseline follows the new models
