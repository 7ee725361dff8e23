#!/usr/bin/env bash
# Build medclear's TensorRT engines on this Jetson (FP16 and INT8, plus a fixed-shape DLA
# engine where the module has DLA cores) from the shipped ONNX files, sharing one persistent
# timing cache, and verify each engine against ONNX Runtime.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: jetson/build_engines.sh [options]

Engines are tied to the GPU and TensorRT version they were built with, so build them on the
Jetson that will run them. For each precision this runs
  python -m compiler build  --onnx M --precision P --out E --min .. --opt .. --max .. --timing-cache C
  python -m compiler verify --onnx M --engine E
FP16 is built from NAME.fp32.onnx, INT8 from NAME.int8.onnx (its Q/DQ nodes carry the scales).
When TensorRT reports DLA cores (AGX Orin, Orin NX, Xavier) a DLA engine with one fixed shape
(min = opt = max) is added; layers DLA cannot run fall back to the GPU.

Options:
  --models DIR          folder with the ONNX files (default: $MEDCLEAR_REPO/models)
  --name NAME           model base name (default: medclear_student)
  --out-dir DIR         where engines go (default: $MEDCLEAR_REPO/engines)
  --timing-cache FILE   persistent timing cache, reused by later builds (default: OUT_DIR/NAME.trtVERSION.timing.cache)
  --precisions LIST     comma-separated GPU precisions (default: fp16,int8)
  --min SHAPE           smallest input NxCxHxW (default: 1x1x256x256)
  --opt SHAPE           shape TensorRT tunes for (default: 1x1x512x512)
  --max SHAPE           largest input (default: 1x1x2048x2048)
  --dla-shape SHAPE     the DLA engine's one shape (default: the --opt shape)
  --dla-precision P     fp16 or int8 for the DLA engine (default: fp16)
  --dla-core N          DLA core to build for (default: 0)
  --no-dla              skip the DLA engine even where DLA exists
  --workspace-mib N     builder workspace limit in MiB (default: the compiler's)
  --tolerance-db DB     passed to 'compiler verify' (default: the compiler's)
  --no-verify           build only
  --python PY           interpreter (default: $MEDCLEAR_REPO/.venv/bin/python, else python3)
EOF
    common_help MEDCLEAR_FAKE_L4T MEDCLEAR_FAKE_DLA MEDCLEAR_FAKE_TRT
}

MODELS="$MEDCLEAR_REPO/models"
NAME=medclear_student
OUT_DIR="$MEDCLEAR_REPO/engines"
TIMING_CACHE=""
PRECISIONS=fp16,int8
MIN_SHAPE=1x1x256x256
OPT_SHAPE=1x1x512x512
MAX_SHAPE=1x1x2048x2048
DLA_SHAPE=""
DLA_PRECISION=fp16
DLA_CORE=0
USE_DLA=1
WORKSPACE_MIB=""
TOLERANCE_DB=""
VERIFY=1
PYTHON=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --models) MODELS="${2:?--models needs a folder}"; shift 2 ;;
        --name) NAME="${2:?--name needs a name}"; shift 2 ;;
        --out-dir) OUT_DIR="${2:?--out-dir needs a folder}"; shift 2 ;;
        --timing-cache) TIMING_CACHE="${2:?--timing-cache needs a file}"; shift 2 ;;
        --precisions) PRECISIONS="${2:?--precisions needs a list}"; shift 2 ;;
        --min) MIN_SHAPE="${2:?--min needs NxCxHxW}"; shift 2 ;;
        --opt) OPT_SHAPE="${2:?--opt needs NxCxHxW}"; shift 2 ;;
        --max) MAX_SHAPE="${2:?--max needs NxCxHxW}"; shift 2 ;;
        --dla-shape) DLA_SHAPE="${2:?--dla-shape needs NxCxHxW}"; shift 2 ;;
        --dla-precision) DLA_PRECISION="${2:?--dla-precision needs fp16 or int8}"; shift 2 ;;
        --dla-core) DLA_CORE="${2:?--dla-core needs a number}"; shift 2 ;;
        --no-dla) USE_DLA=0; shift ;;
        --workspace-mib) WORKSPACE_MIB="${2:?--workspace-mib needs a number}"; shift 2 ;;
        --tolerance-db) TOLERANCE_DB="${2:?--tolerance-db needs a number}"; shift 2 ;;
        --no-verify) VERIFY=0; shift ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
PYTHON="${PYTHON:-$(default_python)}"
DLA_SHAPE="${DLA_SHAPE:-$OPT_SHAPE}"
for shape in "$MIN_SHAPE" "$OPT_SHAPE" "$MAX_SHAPE" "$DLA_SHAPE"; do
    [[ "$shape" =~ ^[0-9]+x[0-9]+x[0-9]+x[0-9]+$ ]] || die "shape '$shape' is not NxCxHxW"
done
[[ "$DLA_CORE" =~ ^[0-9]+$ ]] || die "--dla-core must be a number, not '$DLA_CORE'"

# ONNX file feeding each precision: FP16 runs the fp32 graph, INT8 the Q/DQ graph.
onnx_for() {
    case "$1" in
        fp16) printf '%s/%s.fp32.onnx\n' "$MODELS" "$NAME" ;;
        int8) printf '%s/%s.int8.onnx\n' "$MODELS" "$NAME" ;;
        *) die "unknown precision '$1' (fp16 or int8)" ;;
    esac
}

L4T="$(detect_l4t)"
IFS='|' read -r JETPACK TRT_EXPECTED _CUDA _STATUS <<<"$(jetpack_for_l4t "${L4T:-none}")"
log "L4T ${L4T:-none} (JetPack $JETPACK, TensorRT $TRT_EXPECTED expected)"
TRT_VERSION="$(detect_trt "$PYTHON")"
if [[ -z "$TRT_VERSION" ]]; then
    [[ "$DRY_RUN" == 1 ]] || die "'$PYTHON' cannot import tensorrt; run jetson/setup.sh first (TensorRT comes from JetPack: python3-libnvinfer)"
    log "warning: '$PYTHON' cannot import tensorrt (dry run goes on)"
fi
# Timing caches are only valid for one device and TensorRT version: one file per version.
TIMING_CACHE="${TIMING_CACHE:-$OUT_DIR/$NAME.trt${TRT_VERSION:-unknown}.timing.cache}"
DLA_CORES="$(detect_dla "$PYTHON")"
log "TensorRT ${TRT_VERSION:-missing}; DLA cores: $DLA_CORES"

IFS=',' read -r -a PRECISION_LIST <<<"$PRECISIONS"
for precision in "${PRECISION_LIST[@]}"; do
    onnx="$(onnx_for "$precision")"
    if [[ ! -f "$onnx" ]]; then
        [[ "$DRY_RUN" == 1 ]] || die "$onnx: not found (the ONNX files ship in models/; export them on a workstation with 'python -m compiler export')"
        log "warning: $onnx not found (dry run goes on)"
    fi
done

if [[ "$DRY_RUN" != 1 && "$VERIFY" == 1 ]] && ! "$PYTHON" -c 'import compiler.verify' 2>/dev/null; then
    die "'$PYTHON' cannot import compiler.verify (run '$PYTHON -c \"import compiler.verify\"' to see why; see jetson/README.md, known issues); build without checks with --no-verify"
fi

run mkdir -p "$OUT_DIR"

# build_and_verify PRECISION ENGINE MIN OPT MAX [extra compiler build flags...]
build_and_verify() {
    local precision="$1" engine="$2" min="$3" opt="$4" max="$5"
    shift 5
    local onnx
    onnx="$(onnx_for "$precision")"
    local cmd=("$PYTHON" -m compiler build --onnx "$onnx" --precision "$precision" --out "$engine"
        --min "$min" --opt "$opt" --max "$max" --timing-cache "$TIMING_CACHE")
    [[ -z "$WORKSPACE_MIB" ]] || cmd+=(--workspace-mib "$WORKSPACE_MIB")
    run "${cmd[@]}" "$@"
    if [[ "$VERIFY" == 1 ]]; then
        local verify=("$PYTHON" -m compiler verify --onnx "$onnx" --engine "$engine")
        [[ -z "$TOLERANCE_DB" ]] || verify+=(--tolerance-db "$TOLERANCE_DB")
        run "${verify[@]}"
    fi
}

for precision in "${PRECISION_LIST[@]}"; do
    build_and_verify "$precision" "$OUT_DIR/$NAME.$precision.engine" "$MIN_SHAPE" "$OPT_SHAPE" "$MAX_SHAPE"
done

if [[ "$USE_DLA" == 1 && "$DLA_CORES" =~ ^[0-9]+$ && "$DLA_CORES" -gt 0 ]]; then
    [[ "$DLA_CORE" -lt "$DLA_CORES" ]] || die "--dla-core $DLA_CORE: this module has $DLA_CORES DLA core(s)"
    # DLA runs one static shape only, so the profile is pinned: min = opt = max.
    build_and_verify "$DLA_PRECISION" "$OUT_DIR/$NAME.dla$DLA_CORE.$DLA_PRECISION.engine" \
        "$DLA_SHAPE" "$DLA_SHAPE" "$DLA_SHAPE" --dla-core "$DLA_CORE"
else
    if [[ "$USE_DLA" == 1 ]]; then
        log "no DLA engine: this module has no DLA cores ($DLA_CORES)"
    else
        log "no DLA engine: --no-dla given"
    fi
fi
log "engines in $OUT_DIR; timing cache $TIMING_CACHE; next: jetson/benchmark.sh"
