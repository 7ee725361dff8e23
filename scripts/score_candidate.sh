#!/usr/bin/env bash
# Every validation measure the shipping rules of issue 11 use (docs/TRAINING.md), for one candidate:
# its QAT checkpoint and the float checkpoint that QAT started from. Writes OUT_DIR/scores.jsonl
# (one JSON object per measure) and the candidate's exported ONNX files; never loads the test split.
#
#   bash scripts/score_candidate.sh QAT_CKPT FLOAT_CKPT OUT_DIR [CONFIG]
#
#   - validation mean and per modality as deployed (trainer.validate --runtime-normalization), QAT and float:
#     overall / CT / DX / MR, and the DX INT8 cost (QAT DX minus float DX);
#   - CT per dose level and kernel, both windows, and hann_low (trainer.ct_levels), QAT (INT8) and float,
#     also over the real CT validation scans alone (real_CT, real_hann_low);
#   - the exported INT8 model through the runtime: dark-band error of the unsaturated validation
#     radiographs and MR noise-level sensitivity (trainer.rule_measures).
# CONFIG (default: the shipped QAT's config) defines the validation split. About 5 minutes on 2 cores.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: bash scripts/score_candidate.sh QAT_CKPT FLOAT_CKPT OUT_DIR [CONFIG]" >&2
    exit 2
fi
# Paths as the caller gave them, before moving to the repository root.
QAT="$(realpath -m "$1")" FLOAT="$(realpath -m "$2")" OUT="$(realpath -m "$3")"
CONFIG="$(realpath -m "${4:-$(dirname "$0")/../trainer/configs/default_qat_runtime_norm_jitter_long.json}")"
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
THREADS="${THREADS:-2}"
for f in "$QAT" "$FLOAT" "$CONFIG"; do
    [[ -f "$f" ]] || { echo "error: not found: $f" >&2; exit 2; }
done
mkdir -p "$OUT"
SCORES="$OUT/scores.jsonl"
: > "$SCORES"
echo "== validation as deployed (QAT, float)" >&2
"$PY" -m trainer.validate "$QAT" "$FLOAT" --config "$CONFIG" --runtime-normalization --threads "$THREADS" >> "$SCORES"
echo "== CT per level and hann_low (QAT, float)" >&2
"$PY" -m trainer.ct_levels "$QAT" "$FLOAT" --config "$CONFIG" --threads "$THREADS" >> "$SCORES"
echo "== export, then dark band and MR level sensitivity of the INT8 model" >&2
"$PY" -m compiler export --checkpoint "$QAT" --out-dir "$OUT" --name candidate >&2
"$PY" -m trainer.rule_measures "$OUT/candidate.int8.onnx" --config "$CONFIG" --threads "$THREADS" >> "$SCORES"
"$PY" - "$SCORES" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
qat, flt, qat_levels, flt_levels, measures = rows
summary = {
    "overall": round(qat["psnr"], 4), "CT": round(qat["psnr_CT"], 4), "DX": round(qat["psnr_DX"], 4),
    "MR": round(qat["psnr_MR"], 4), "float_overall": round(flt["psnr"], 4),
    "int8_hann_low": qat_levels["hann_low"], "float_hann_low": flt_levels["hann_low"],
    "real_CT": round(qat["psnr_CT_offline"], 4) if "psnr_CT_offline" in qat else None,
    "int8_real_hann_low": qat_levels.get("real_hann_low"), "float_real_hann_low": flt_levels.get("real_hann_low"),
    "dx_int8_cost_db": round(qat["psnr_DX"] - flt["psnr_DX"], 3),
    "dark_band": measures["dark_band"]["mse"],
    "worst_mr_level_loss_db": measures["mr_level_sensitivity"]["worst_mr_level_loss_db"],
}
print(json.dumps(summary))
EOF
