#!/usr/bin/env bash
# Reproduce the shipped default model end to end (about a day on 2 CPU cores and a GPU; see below):
# teacher -> distilled students -> fine-tuned student -> QAT -> textured continuation -> QAT -> RMSE-loss continuation ->
# QAT (radiographs clipped at the detector, first encoder block (down.0) in float) -> a second and a third such
# continuation and QAT -> two continuations in the runtime's normalization -> one told a jittered noise level -> the
# student widened as the same function and continued ten times -> one more full-resolution layer (the same function)
# and three continuations -> a second such layer and three more -> one with fine texture on the training CT phantoms
# (ctex) -> one with real head CT slices -> two toward the float's own 4-flip ensemble -> eight with training CT head
# phantoms (the last five with their brain grain, the last four with 24) -> QAT (LR 3e-5, one head phantom) distilled
# toward the last float's 4-flip ensemble (fuse.1 and the new layers in float too); and from ctex an MR-only
# continuation -> its QAT (the MR denoiser)
# -> ONNX fp32 + int8 of both -> quality and latency records -> model card. Every number in models/MODEL_CARD.md
# comes from the files this writes.
#
#   bash scripts/reproduce_default_model.sh [RUN_DIR]     (default RUN_DIR: runs/default)
#
# The trainer configs (trainer/configs/default_*.json) hold every setting: fixed step counts,
# not a time budget, so the result does not depend on the machine's speed. The reference teacher
# (stage 1's second run) and the noise-map continuation (3d) were trained on a lent GPU (benchmarks/gpu_session_record.json):
# TRAIN_DEVICE=cuda runs those two there (about 15 minutes); on 2 CPU cores they take about 11 hours.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-runs/default}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$RUN"
ON_DEVICE=(${TRAIN_DEVICE:+--set train.device=$TRAIN_DEVICE --set train.num_workers=2})

echo "== 1/7 teachers (U-Net++ base width 32, depth 4): the CPU one the students are distilled from, and the"
echo "   GPU-trained reference teacher (docs/TRAINING.md), shipped as models/medclear_teacher.pt"
"$PY" -m trainer teacher --config trainer/configs/default_teacher_cpu.json --out "$RUN/teacher_cpu"
"$PY" -m trainer teacher --config trainer/configs/default_teacher.json --out "$RUN/teacher" ${ON_DEVICE[@]+"${ON_DEVICE[@]}"}

echo "== 2/7 distill three student sizes from the CPU teacher (in parallel, one thread each)"
declare -A WIDTHS=([student_w8]="[8,16,32,64]" [student_w12]="[12,24,48,96]" [student_w16]="[16,32,64,128]")
pids=()
for name in "${!WIDTHS[@]}"; do
    "$PY" -m trainer distill --config trainer/configs/default_distill.json --out "$RUN/$name" \
        --teacher "$RUN/teacher_cpu/best.pt" --set "model.kwargs.widths=${WIDTHS[$name]}" --set train.progress=false \
        > "$RUN/$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
# The smallest student within 0.2 dB of the best validation PSNR (never the test split).
STUDENT=$("$PY" scripts/pareto_students.py "$RUN"/student_w8 "$RUN"/student_w12 "$RUN"/student_w16 \
    --out models/pareto.json | tail -n 1)
echo "chosen: $STUDENT"

echo "== 3/7 fine-tune the chosen student: clean references, MR phantoms, noise-balanced loss"
"$PY" -m trainer distill --config trainer/configs/default_distill_finetune.json --out "$RUN/finetune" \
    --teacher "$RUN/teacher_cpu/best.pt" --init "$STUDENT/best.pt" --set train.progress=false

echo "== 3b/7 second fine-tuning cycle: the same recipe, lower peak LR, fresh schedule"
"$PY" -m trainer distill --config trainer/configs/default_distill_finetune2.json --out "$RUN/finetune2" \
    --teacher "$RUN/teacher_cpu/best.pt" --init "$RUN/finetune/best.pt" --set train.progress=false

echo "== 3c/7 noise-map fine-tune: the second cycle's student told each image's measured noise level"
"$PY" -m trainer distill --config trainer/configs/default_distill_noise_map.json --out "$RUN/noise_map" \
    --teacher "$RUN/teacher_cpu/best.pt" --init "$RUN/finetune2/best.pt" --set train.progress=false

echo "== 3d/7 noise-map continuation at 4x the batch (GPU recipe)"
"$PY" -m trainer distill --config trainer/configs/default_distill_noise_map_gpu.json --out "$RUN/noise_map_gpu" \
    --teacher "$RUN/teacher_cpu/best.pt" --init "$RUN/noise_map/best.pt" --set train.progress=false ${ON_DEVICE[@]+"${ON_DEVICE[@]}"}

echo "== 4/7 quantization-aware training (ModelOpt INT8) of the fine-tuned student"
"$PY" -m trainer qat --config trainer/configs/default_qat.json --out "$RUN/qat_v1" \
    --student "$RUN/noise_map_gpu/best.pt"

# A float continuation of a checkpoint's weights toward a frozen teacher (the config sets the losses;
# its distill.teacher_ensemble averages that teacher over flips):
# distill_toward DISTILL_CONFIG OUT INIT_CHECKPOINT TEACHER_CHECKPOINT
distill_toward() {
    "$PY" -m trainer distill --config "trainer/configs/$1" --out "$RUN/$2" \
        --teacher "$4" --init "$3" --set train.progress=false
}

# The same toward the CPU teacher: continue_from DISTILL_CONFIG OUT INIT_CHECKPOINT
continue_from() {
    distill_toward "$1" "$2" "$3" "$RUN/teacher_cpu/best.pt"
}

# Self-ensemble distillation: a float continuation whose frozen teacher is its own start: self_ensemble CONFIG OUT FROM
self_ensemble() {
    distill_toward "$1" "$2" "$3" "$3"
}

# A float continuation from a QAT model's float weights, then QAT again:
# continue_then_qat FROM_QAT CONTINUATION DISTILL_CONFIG QAT_OUT QAT_CONFIG
continue_then_qat() {
    "$PY" -m trainer.checkpoint float "$RUN/$1/best.pt" "$RUN/$1_float.pt"
    continue_from "$3" "$2" "$RUN/$1_float.pt"
    "$PY" -m trainer qat --config "trainer/configs/$5" --out "$RUN/$4" --student "$RUN/$2/best.pt"
}

echo "== 4b/7 from the first QAT model's float weights: textured MR phantoms and synthetic radiographs in training,"
echo "   12 radiographs in validation (float continuation, then QAT again; docs/TRAINING.md)"
continue_then_qat qat_v1 textured default_distill_textured.json qat_v2 default_qat_textured.json

echo "== 4c/7 from the second QAT model's float weights: 25000 steps with an RMSE loss term, then QAT with radiographs"
echo "   clipped at their detector range and the first encoder block (down.0) in float (docs/TRAINING.md)"
continue_then_qat qat_v2 rmse default_distill_rmse.json qat_v3 default_qat_detector_down0.json

echo "== 4d/7 from the third QAT model's float weights: the same RMSE-loss recipe with clipped radiographs, then the"
echo "   same QAT (docs/TRAINING.md)"
continue_then_qat qat_v3 rmse2 default_distill_rmse2.json qat_v4 default_qat_detector_down0.json

echo "== 4e/7 from the fourth QAT model's float weights: the same recipe once more (16000 steps, seed 15), then the"
echo "   same QAT (docs/TRAINING.md)"
continue_then_qat qat_v4 rmse3 default_distill_rmse3.json qat_v5 default_qat_detector_down0.json

echo "== 4f/7 from the fifth QAT model's float weights: two continuations trained and validated in the runtime's"
echo "   normalization (MR/X-ray fitted on the degraded image, as runtime.enhance fits them) (docs/TRAINING.md)"
"$PY" -m trainer.checkpoint float "$RUN/qat_v5/best.pt" "$RUN/qat_v5_float.pt"
continue_from default_distill_runtime_norm.json rnorm "$RUN/qat_v5_float.pt"
continue_from default_distill_runtime_norm2.json rnorm2 "$RUN/rnorm/best.pt"

echo "== 4g/7 a third continuation told a jittered noise level (noise_map_jitter 0.25: a smooth response to the level"
echo "   the runtime estimates) (docs/TRAINING.md)"
continue_from default_distill_runtime_norm_jitter.json jitter "$RUN/rnorm2/best.pt"

echo "== 4h/7 the student widened to [16, 32, 48, 96] as the same function (trainer/models/widen.py), three 8000-step"
echo "   continuations and seven 16000-step ones, then the 9600-step QAT with the jitter in which the float student"
echo "   distils into its quantized copy (qat.float_kd) and the half-resolution fuse conv stays in float (docs/TRAINING.md)"
# Widening to [16, 32, 48, 96] starts from the 12-channel size; another stage-2 pick would train a different model.
[[ "$(basename "$STUDENT")" == student_w12 ]] || { echo "stage 4h: stage 2 chose $STUDENT, not student_w12" >&2; exit 1; }
continue_from default_distill_widen.json widen "$RUN/jitter/best.pt"
continue_from default_distill_widen.json widen2 "$RUN/widen/best.pt"
continue_from default_distill_widen.json widen3 "$RUN/widen2/best.pt"
continue_from default_distill_widen_long.json widen4 "$RUN/widen3/best.pt"
continue_from default_distill_widen_long.json widen5 "$RUN/widen4/best.pt"
continue_from default_distill_widen_long.json widen6 "$RUN/widen5/best.pt"
continue_from default_distill_widen_long.json widen7 "$RUN/widen6/best.pt"
continue_from default_distill_widen_long.json widen8 "$RUN/widen7/best.pt"
continue_from default_distill_widen_long.json widen9 "$RUN/widen8/best.pt"
continue_from default_distill_widen_long.json widen10 "$RUN/widen9/best.pt"

echo "== 4i/7 one more full-resolution layer after fuse.0 (extra_blocks [1, 0, 0, 0], starting as the identity:"
echo "   trainer/models/student.py), three 16000-step continuations, a second such layer (extra_blocks [2, 0, 0, 0]) and"
echo "   three 16000-step continuations more, then 16000 steps with fine texture on the training CT phantoms"
echo "   (data.ct_phantom_texture), then the QAT at LR 3e-5 with those layers in float too (docs/TRAINING.md)"
continue_from default_distill_deep.json deep "$RUN/widen10/best.pt"
continue_from default_distill_deep.json deep2 "$RUN/deep/best.pt"
continue_from default_distill_deep.json deep3 "$RUN/deep2/best.pt"
continue_from default_distill_deep_two.json deep4 "$RUN/deep3/best.pt"
continue_from default_distill_deep_two.json deep5 "$RUN/deep4/best.pt"
continue_from default_distill_deep_two.json deep6 "$RUN/deep5/best.pt"
continue_from default_distill_deep_two_ctex.json ctex "$RUN/deep6/best.pt"
echo "== 4i'/7 16000 steps with 24 real head CT slices (Debian's invesalius-examples, docs/DATA.md) beside the"
echo "   phantoms (the QAT after it trains without them)"
continue_from default_distill_deep_two_ctex_invesalius.json invesalius "$RUN/ctex/best.pt"
echo "== 4i''/7 8000 steps toward the invesalius float's own 4-flip ensemble (self-ensemble distillation, docs/DECISIONS.md"
echo "   section 30), twice"
self_ensemble default_distill_deep_two_ctex_invesalius_ens4.json ensemble "$RUN/invesalius/last.pt"
self_ensemble default_distill_deep_two_ctex_invesalius_ens4.json ensemble2 "$RUN/ensemble/last.pt"
echo "== 4i'''/7 that recipe with 12 training CT head phantoms (docs/DATA.md), 8000 steps three times, then nine"
echo "   times more with the heads' brain grain (12, then 24 heads eight times, the last two with training doses up to"
echo "   full dose, the last of all with phantoms' up to twice full dose), all toward ensemble2's ensemble; then"
echo "   the QAT (one head phantom, phantoms' doses up to twice full) at noise-map jitter 0.4 toward the last float's"
echo "   ensemble"
self_ensemble default_distill_deep_two_ctex_invesalius_ens4_heads.json heads "$RUN/ensemble2/last.pt"
distill_toward default_distill_deep_two_ctex_invesalius_ens4_heads.json heads2 "$RUN/heads/last.pt" "$RUN/ensemble2/last.pt"
distill_toward default_distill_deep_two_ctex_invesalius_ens4_heads.json heads3 "$RUN/heads2/last.pt" "$RUN/ensemble2/last.pt"
distill_toward default_distill_deep_two_ctex_invesalius_ens4_heads_grain.json heads4 "$RUN/heads3/last.pt" "$RUN/ensemble2/last.pt"
for n in 5 6 7 8 9 10; do  # the 24-head round six times, each from the one before (make_model_card.py HEAD_STAGES)
    distill_toward default_distill_deep_two_ctex_invesalius_ens4_heads24_grain.json "heads$n" \
        "$RUN/heads$((n - 1))/last.pt" "$RUN/ensemble2/last.pt"
done
distill_toward default_distill_deep_two_ctex_invesalius_ens4_heads24_grain_fulldose.json heads11 \
    "$RUN/heads10/last.pt" "$RUN/ensemble2/last.pt"  # once more with training doses up to full dose
distill_toward default_distill_deep_two_ctex_invesalius_ens4_heads24_grain_fulldose2.json heads12 \
    "$RUN/heads11/last.pt" "$RUN/ensemble2/last.pt"  # and with phantom doses up to twice full dose
"$PY" -m trainer qat --config trainer/configs/default_qat_float_kd_deep_lowlr_jitter04_ens4_heads1_fulldose2.json \
    --out "$RUN/qat" --student "$RUN/heads12/last.pt" --set train.threads=1  # threads change the float sums

echo "== 4j/7 the MR denoiser (docs/DECISIONS.md section 28): ctex's student trained 16000 steps on MR alone (phantoms,"
echo "   the MNI152 template, photographs; its last step, not best.pt), then its QAT on MR (4800 steps)"
continue_from default_distill_mr_specialist.json mr "$RUN/ctex/best.pt"
"$PY" -m trainer qat --config trainer/configs/default_qat_mr_specialist.json --out "$RUN/qat_mr" \
    --student "$RUN/mr/last.pt" --set train.threads=1

echo "== 5-6/7 the QAT models ship: ONNX fp32 + int8 into models/, the gate, the dose curve and latency"
ln -sfn "$(basename "$STUDENT")" "$RUN/student"  # the model card reads teacher/, student/, ..., qat/
"$PY" -m trainer.checkpoint slim "$RUN/teacher/best.pt" models/medclear_teacher.pt
PYTHON="$PY" bash scripts/ship_default_model.sh "$RUN/qat/best.pt" "$RUN/qat_mr/best.pt"

echo "== 7/7 model card"
"$PY" scripts/make_model_card.py --run "$RUN" --quality models/quality.json --latency models/latency.json
