#!/usr/bin/env bash
# One lent-GPU call (the `device` tool, docs/BENCHMARKS.md "GPU session"): the CUDA tests, then
# five time-budgeted trainings side by side on the one GPU, each writing best.pt chosen on its
# validation split. Results come back under $OUT (at most 8 files): gpu_tests.log and one tar
# per run (best.pt, log.jsonl, stdout).
#
# The machine has CUDA torch, scikit-image and onnxruntime but no pydicom and no network: the
# caller carries .whl/ (pydicom, pylibjpeg, openjpeg, PyWavelets wheels for its Python) and .gpu/
# (data_store/: the pydicom-data files the sources use, so the image list and the split are the
# same as with the full package; ckpt/: the checkpoints runs start from). The configs are the
# committed ones (the 2026-12-04 calls ran copies that differed only in the overrides given here).
#
#   MINUTES=5.5 bash scripts/device_train.sh    # on the device (JOBS=sr2_real_only: the second call)
#   DRY=1 MINUTES=0.2 OUT=/tmp/out bash scripts/device_train.sh   # here: a few steps on the CPU
set -u
cd "$(dirname "$0")/.." || exit 2
MINUTES=${MINUTES:-5.5}
OUT=${OUT:?set OUT}
WORK=${WORK:-/tmp/gpu_runs}
mkdir -p "$OUT" "$WORK"
if [ -z "${DRY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD
    PY=python3; DEVICE=cuda; WORKERS=2
else
    export PYTHONPATH=$PWD/.gpu:$PWD
    PY=${PY:-.venv/bin/python}; DEVICE=cpu; WORKERS=0
fi
export PYTHONUNBUFFERED=1

{
    date -u; nvidia-smi 2>&1 | head -15
    $PY -c "import torch, numpy, pydicom, skimage; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'pydicom', pydicom.__version__, 'skimage', skimage.__version__)"
    $PY -c "import cuda.bindings; print('cuda-bindings', cuda.bindings.__version__)" 2>&1
    $PY -m pytest -q -p no:cacheprovider -m "gpu or cuda" -ra tests/test_cuda_gpu.py tests/test_runtime_backends.py \
        tests/test_compiler_build.py > /tmp/gpu_pytest.log 2>&1
    echo "pytest exit code $?"; tail -30 /tmp/gpu_pytest.log
} > "$OUT/gpu_tests.log" 2>&1 &

COMMON=(--set "train.device=$DEVICE" --set "train.num_workers=$WORKERS" --set train.threads=2
        --set train.progress=false --set "train.max_minutes=$MINUTES" --set train.steps=1000000 --set train.amp=off)
NOISE_DATA=(--set data.xray_validation_phantoms=3)  # the QAT stage's validation: CT, MR and radiographs

run() {  # NAME STAGE ARGS...: one training in the background, stdout to WORK/NAME.out; killed
          # after HARD_S seconds whatever its budget (best.pt is written at every improving evaluation)
    local name=$1 stage=$2; shift 2
    timeout "${HARD_S:-480}" "$PY" -m trainer "$stage" --out "$WORK/$name" "$@" "${COMMON[@]}" > "$WORK/$name.out" 2>&1 &
}

first_call() {  # 2026-12-04, first call: five runs (benchmarks/gpu_session_record.json)
    # Issue 11: a teacher on the student's data (blind: the U-Net++ takes no noise map), trained long.
    run teacher_nm teacher --config trainer/configs/default_teacher.json
    # Issue 11: the shipped float student continued at 4x the batch; a w16 student from scratch.
    run student_w12 distill --config trainer/configs/default_distill_noise_map.json --init .gpu/ckpt/nm_ft2.pt \
        --teacher models/medclear_teacher.pt "${NOISE_DATA[@]}" --set train.batch_size=64 --set train.warmup_steps=200 \
        --set train.eval_every=1500
    run student_w16 distill --config trainer/configs/default_distill_noise_map.json \
        --teacher models/medclear_teacher.pt "${NOISE_DATA[@]}" --set 'model.kwargs.widths=[16,32,64,128]' \
        --set train.batch_size=64 --set train.lr=0.001 --set train.warmup_steps=300 --set train.eval_every=1500
    # Issue 15: the shipped x2 float student distilled on the real slices (KD 1.0), and a larger x2 teacher.
    run sr2_kd_real distill --config trainer/configs/sr2_distill_kd_real.json --init .gpu/ckpt/sr2d_student.pt \
        --teacher models/medclear_sr2_teacher.pt --set train.batch_size=64 --set train.eval_every=1000
    run sr2_teacher64 teacher --config trainer/configs/sr2_teacher.json --set model.kwargs.width=64 \
        --set model.kwargs.blocks=8 --set train.batch_size=32 --set train.eval_every=1000
    NAMES="teacher_nm student_w12 student_w16 sr2_kd_real sr2_teacher64"
}

sr2_real_only() {  # second call: the x2 student distilled on real images only, from two starting points
    local real=(--config trainer/configs/sr2_distill_real_only.json --teacher models/medclear_sr2_teacher.pt)
    run sr2_real_from_kd distill "${real[@]}" --init .gpu/ckpt/sr2_student.pt --set train.lr=0.0003
    run sr2_real_from_sr2e distill "${real[@]}" --init .gpu/ckpt/sr2e_student.pt --set train.lr=0.0003
    run sr2_real_from_sr2e_lr1e4 distill "${real[@]}" --init .gpu/ckpt/sr2e_student.pt
    NAMES="sr2_real_from_kd sr2_real_from_sr2e sr2_real_from_sr2e_lr1e4"
}

JOBS=${JOBS:-first_call}
case "$JOBS" in
    first_call | sr2_real_only) "$JOBS" ;;
    *) echo "JOBS must be first_call or sr2_real_only, not '$JOBS'"; wait; exit 2 ;;
esac
wait  # the trainings and the tests
for name in $NAMES; do
    dir=$WORK/$name
    if [ -f "$dir/best.pt" ]; then  # without optimizer state: each file must stay under 16 MiB
        $PY -m trainer.checkpoint slim "$dir/best.pt" "$dir/slim.pt" >> "$WORK/$name.out" 2>&1
    fi
    mapfile -t kept < <(cd "$WORK" && ls "$name"/slim.pt "$name"/log.jsonl 2>/dev/null)
    tar -C "$WORK" -cf "$OUT/$name.tar" "$name.out" "${kept[@]}"
    echo "== $name"; tail -c 600 "$WORK/$name.out"; echo
done
ls -la "$OUT"
grep -q "pytest exit code 0" "$OUT/gpu_tests.log"  # the script's exit code: the GPU tests'
