#!/usr/bin/env bash
# Reproduce the shipped x2 super-resolution model end to end (about 7.5 hours on 2 CPU cores, 3 of them the real-only stage;
# TRAIN_DEVICE=cuda runs that stage on a GPU in minutes): teacher -> distilled student (and its adversarial variant) ->
# QAT -> Lanczos-3 base -> INT8 by calibration (and for MR: Lanczos-8 base, distilled from zero-filled DCT
# interpolation, INT8 by calibration) -> ONNX fp32 + int8 ->
# test-split quality against nearest/bicubic/Lanczos/zero-filled k-space -> latency -> the model card's x2 section.
#
#   bash scripts/reproduce_sr2_model.sh [RUN_DIR]     (default RUN_DIR: runs/sr2)
#
# The trainer configs (trainer/configs/sr2_*.json) hold every setting. The teacher and the first
# student used their time budgets (train.max_minutes) on this 2-core machine, so a faster machine
# trains longer; the later stages have fixed steps. The real-only stage was trained on a lent GPU
# (TRAIN_DEVICE=cuda runs it there; about 3 hours on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-runs/sr2}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$RUN"
ON_DEVICE=(${TRAIN_DEVICE:+--set train.device=$TRAIN_DEVICE --set train.num_workers=2})

# Distil the x2 student again from a checkpoint: distill_from CONFIG STAGE INIT_CHECKPOINT [extra trainer args]
distill_from() {
    "$PY" -m trainer distill --config "trainer/configs/$1" --out "$RUN/$2" \
        --teacher "$RUN/teacher/best.pt" --init "$3" --set train.progress=false "${@:4}"
}

echo "== 1/6 x2 teacher (EDSR-style, 32 channels, 6 residual blocks)"
"$PY" -m trainer teacher --config trainer/configs/sr2_teacher.json --out "$RUN/teacher" --set train.progress=false

echo "== 2/6 distill the x2 student; its adversarial variant (L1 0.5 / SSIM 0.3 / GAN 0.2) from it"
"$PY" -m trainer distill --config trainer/configs/sr2_distill.json --out "$RUN/student" \
    --teacher "$RUN/teacher/best.pt" --set train.progress=false
"$PY" -m trainer distill --config trainer/configs/sr2_distill_gan.json --out "$RUN/student_gan" \
    --teacher "$RUN/teacher/best.pt" --init "$RUN/student/best.pt" --set train.progress=false > "$RUN/student_gan.log" 2>&1 &
gan=$!

echo "== 3/6 distill the student again on real slices (KD 1.0, few phantoms), then on real images only; QAT (ModelOpt INT8);"
echo "       its weights moved onto a Lanczos-3 base and trained on; INT8 by calibration alone"
distill_from sr2_distill_kd_real.json kd_real "$RUN/student/best.pt"
distill_from sr2_distill_real_only.json real_only "$RUN/kd_real/best.pt" ${ON_DEVICE[@]+"${ON_DEVICE[@]}"}
"$PY" -m trainer qat --config trainer/configs/sr2_qat.json --out "$RUN/qat_nearest" --student "$RUN/real_only/best.pt"
"$PY" -m trainer.checkpoint float "$RUN/qat_nearest/best.pt" "$RUN/qat_nearest_float.pt"
distill_from sr2_distill_lanczos.json lanczos "$RUN/qat_nearest_float.pt"
distill_from sr2_distill_lanczos2.json lanczos2 "$RUN/lanczos/best.pt"
distill_from sr2_distill_lanczos2.json lanczos3 "$RUN/lanczos2/best.pt"
distill_from sr2_distill_lanczos2.json lanczos4 "$RUN/lanczos3/best.pt"
"$PY" -m trainer qat --config trainer/configs/sr2_qat_calibrate.json --out "$RUN/qat" --student "$RUN/lanczos4/best.pt"

echo "== 3b/6 the MR x2 model: lanczos4's weights on a Lanczos-8 base, distilled on MR alone (pairs by DCT k-space"
echo "        truncation) toward zero-filled DCT interpolation (a fixed module, no weights); INT8 by calibration"
"$PY" -m trainer.checkpoint fixed sr2_dct_zero_fill "$RUN/dct_zero_fill.pt"
"$PY" -m trainer distill --config trainer/configs/sr2_distill_mr_dct_zf.json --out "$RUN/mr" \
    --teacher "$RUN/dct_zero_fill.pt" --init "$RUN/lanczos4/best.pt" --set train.progress=false
"$PY" -m trainer qat --config trainer/configs/sr2_qat_calibrate_mr_dct.json --out "$RUN/qat_mr" --student "$RUN/mr/best.pt"
wait "$gan"

echo "== 4/6 export ONNX fp32 + int8: every trained modality into $RUN/onnx_all (measured next)"
"$PY" -m trainer.checkpoint slim "$RUN/qat/best.pt" models/medclear_sr2.qat.pt
"$PY" -m trainer.checkpoint slim "$RUN/teacher/best.pt" models/medclear_sr2_teacher.pt
"$PY" -m trainer.checkpoint slim "$RUN/student_gan/best.pt" models/medclear_sr2_gan.pt
"$PY" -m compiler export --checkpoint models/medclear_sr2.qat.pt --out-dir "$RUN/onnx_all" --name medclear_sr2
"$PY" -m compiler verify --onnx "$RUN/onnx_all/medclear_sr2.int8.onnx" --reference "$RUN/onnx_all/medclear_sr2.fp32.onnx"
# The MR x2 model is trained on MR alone and released for MR.
"$PY" -m trainer.checkpoint slim "$RUN/qat_mr/best.pt" models/medclear_sr2_mr.qat.pt
"$PY" -m compiler export --checkpoint models/medclear_sr2_mr.qat.pt --out-dir models --name medclear_sr2_mr --modalities MR
"$PY" -m compiler verify --onnx models/medclear_sr2_mr.int8.onnx --reference models/medclear_sr2_mr.fp32.onnx

echo "== 5/6 quality on the test split (every modality), the release, latency on this machine"
# MR test images are halved by DCT truncation (no wrap-around at a non-periodic image's edges; docs/DATA.md).
"$PY" -m benchmarks.super_resolution "$RUN/onnx_all/medclear_sr2.fp32.onnx" "$RUN/onnx_all/medclear_sr2.int8.onnx" \
    models/medclear_sr2_mr.fp32.onnx models/medclear_sr2_mr.int8.onnx \
    models/medclear_sr2_gan.pt --teacher models/medclear_sr2_teacher.pt --threads 2 --fsim --mr-kspace dct \
    --out models/sr2_quality.json --grid docs/images/sr2_crops.png --markdown docs/BENCHMARKS.md
# The shipped CT files: the same weights released for CT only, the one modality their validation split holds (MR has
# its own model above; X-ray is reported on the test split, never chosen on it: models/sr2_quality.json); the runtime
# refuses the rest.
"$PY" -m compiler export --checkpoint models/medclear_sr2.qat.pt --out-dir models --name medclear_sr2 --modalities CT
"$PY" -m benchmarks.latency models/medclear_sr2.fp32.onnx models/medclear_sr2.int8.onnx \
    models/medclear_sr2_mr.fp32.onnx models/medclear_sr2_mr.int8.onnx \
    models/medclear_student.fp32.onnx models/medclear_student.int8.onnx --sizes 512 --batches 1 --no-process \
    --out models/sr2_latency.json

echo "== 6/6 the model card's x2 section"
"$PY" scripts/make_model_card.py --sr2 --run "$RUN" --quality models/sr2_quality.json --latency models/sr2_latency.json
