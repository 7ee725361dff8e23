#!/usr/bin/env bash
# Prepare a Jetson for medclear: check JetPack, TensorRT and a CUDA Python binding, then make a
# venv that sees JetPack's own TensorRT and install medclear's runtime (and optionally compiler)
# requirements into it without replacing any JetPack package.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: jetson/setup.sh [options]

Checks the Jetson (L4T/JetPack release, TensorRT Python bindings from JetPack, cuda-python or
pycuda), creates a venv with --system-site-packages so JetPack's tensorrt stays visible, and
installs medclear's runtime requirements into it (numpy kept below 2 for JetPack's TensorRT).
TensorRT and torch are never pip-installed: TensorRT comes from JetPack via apt
(python3-libnvinfer); torch is not needed on the Jetson (ONNX models are shipped in models/).
It ends with a list of what is missing and how to get it.

Options:
  --venv DIR            venv to create or reuse (default: $MEDCLEAR_REPO/.venv)
  --python PY           system interpreter JetPack's tensorrt belongs to (default: python3)
  --with-compiler       also install the compiler's needs without torch (onnx, onnxslim,
                        polygraphy), for jetson/build_engines.sh
  --with-bench          also what jetson/benchmark.sh needs (the bench extra without torch;
                        implies --with-compiler)
  --cuda-binding KIND   auto|cuda-python|pycuda|none (default: auto = keep one that is already
                        importable, else pip-install cuda-python matching JetPack's CUDA)
  --force               go on although this does not look like a supported Jetson
EOF
    common_help MEDCLEAR_FAKE_L4T MEDCLEAR_FAKE_MODEL MEDCLEAR_FAKE_TRT MEDCLEAR_FAKE_CUDA_PY MEDCLEAR_FAKE_PYTHON_VERSION
}

VENV="$MEDCLEAR_REPO/.venv"
SYSTEM_PYTHON=python3
WITH_COMPILER=0
WITH_BENCH=0
CUDA_BINDING=auto
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv) VENV="${2:?--venv needs a directory}"; shift 2 ;;
        --python) SYSTEM_PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --with-compiler) WITH_COMPILER=1; shift ;;
        --with-bench) WITH_COMPILER=1; WITH_BENCH=1; shift ;;
        --cuda-binding) CUDA_BINDING="${2:?--cuda-binding needs a kind}"; shift 2 ;;
        --force) FORCE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
case "$CUDA_BINDING" in
    auto | cuda-python | pycuda | none) ;;
    *) die "--cuda-binding must be auto, cuda-python, pycuda or none, not '$CUDA_BINDING'" ;;
esac

MISSING=()
missing() { MISSING+=("$1"); log "missing: $1"; }

# --- the device -------------------------------------------------------------------------
L4T="$(detect_l4t)"
MODEL="$(detect_model)"
if [[ -z "$L4T" ]]; then
    if [[ "$DRY_RUN" == 1 || "$FORCE" == 1 ]]; then
        log "warning: no /etc/nv_tegra_release or nvidia-l4t-core package: not a Jetson"
        L4T=unknown
    else
        die "no /etc/nv_tegra_release or nvidia-l4t-core package: this is not a Jetson (use --force to go on)"
    fi
fi
IFS='|' read -r JETPACK TRT_EXPECTED CUDA_EXPECTED STATUS <<<"$(jetpack_for_l4t "$L4T")"
log "board: $MODEL"
log "L4T $L4T -> JetPack $JETPACK (ships TensorRT $TRT_EXPECTED, CUDA $CUDA_EXPECTED)"
case "$STATUS" in
    supported) ;;
    python-too-old)
        log "warning: JetPack 5.x has Python 3.8 and its TensorRT bindings are built for it;" \
            "medclear needs Python >= 3.10. Use JetPack 6 (L4T R36) on Orin; Xavier stays on JetPack 5." ;;
    unconfirmed)
        log "warning: L4T $L4T is newer than the releases medclear was written for; its TensorRT/CUDA" \
            "versions are not confirmed here. Expect TensorRT 10 behaviour; report problems." ;;
    *)
        [[ "$DRY_RUN" == 1 || "$FORCE" == 1 ]] || die "unknown L4T release '$L4T' (use --force to go on)"
        log "warning: unknown L4T release '$L4T'" ;;
esac

# --- Python -------------------------------------------------------------------------------
PY_VERSION="${MEDCLEAR_FAKE_PYTHON_VERSION:-$("$SYSTEM_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)}"
if [[ -z "$PY_VERSION" ]]; then
    die "cannot run '$SYSTEM_PYTHON'; install it with: sudo apt-get install python3"
fi
log "system Python: $SYSTEM_PYTHON ($PY_VERSION)"
if [[ "$(printf '%s\n3.10\n' "$PY_VERSION" | sort -V | head -n 1)" != 3.10 ]]; then
    missing "Python >= 3.10 (found $PY_VERSION; JetPack 6 ships 3.10)"
    [[ "$DRY_RUN" == 1 || "$FORCE" == 1 ]] || die "medclear needs Python >= 3.10 (pyproject.toml requires-python)"
fi

TRT_VERSION="$(detect_trt "$SYSTEM_PYTHON")"
if [[ -n "$TRT_VERSION" ]]; then
    log "TensorRT Python bindings: $TRT_VERSION (from JetPack)"
else
    missing "TensorRT Python bindings: sudo apt-get install python3-libnvinfer (or: sudo apt-get install nvidia-jetpack)"
fi

CUDA_FOUND="$(detect_cuda_python "$SYSTEM_PYTHON")"
CUDA_INSTALL=""
if [[ -n "$CUDA_FOUND" ]]; then
    log "CUDA Python binding: $CUDA_FOUND"
elif [[ "$CUDA_BINDING" == auto || "$CUDA_BINDING" == cuda-python ]]; then
    case "$CUDA_EXPECTED" in
        [0-9]*.[0-9]) CUDA_INSTALL="cuda-python==${CUDA_EXPECTED}.*" ;;
        *) missing "CUDA Python binding: CUDA version unknown for L4T $L4T; pip install cuda-python==<your CUDA major.minor>.* into the venv" ;;
    esac
elif [[ "$CUDA_BINDING" == pycuda ]]; then
    # pycuda builds from source against JetPack's CUDA; nvcc must be on PATH.
    CUDA_INSTALL="pycuda"
else
    missing "CUDA Python binding (cuda-python or pycuda): the TensorRT backend needs one"
fi

if [[ "$DRY_RUN" != 1 ]] && ! "$SYSTEM_PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    die "'$SYSTEM_PYTHON -m venv' is unavailable; install it with: sudo apt-get install python3-venv"
fi

# --- the venv -------------------------------------------------------------------------------
VPY="$VENV/bin/python"
CONSTRAINTS="$MEDCLEAR_REPO/jetson/constraints.txt"
if [[ -x "$VPY" ]]; then
    log "reusing venv $VENV"
else
    run "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
fi
run "$VPY" -m pip install --upgrade pip
# medclear itself with its runtime dependencies only: none of them is a JetPack package.
run "$VPY" -m pip install --constraint "$CONSTRAINTS" --editable "$MEDCLEAR_REPO"
EXTRAS=()
[[ "$WITH_COMPILER" == 0 ]] || EXTRAS+=(compile)
[[ "$WITH_BENCH" == 0 ]] || EXTRAS+=(bench)
if [[ ${#EXTRAS[@]} -gt 0 ]]; then
    # In a dry run the venv does not exist yet; the system interpreter reads pyproject.toml.
    EXTRAS_PY="$VPY"
    [[ "$DRY_RUN" == 0 ]] || EXTRAS_PY="$SYSTEM_PYTHON"
    EXTRA_REQS=()
    for extra in "${EXTRAS[@]}"; do
        mapfile -t -O "${#EXTRA_REQS[@]}" EXTRA_REQS < <("$EXTRAS_PY" "$MEDCLEAR_REPO/jetson/extras.py" "$extra")
    done
    [[ ${#EXTRA_REQS[@]} -gt 0 ]] || die "jetson/extras.py found no requirements for: ${EXTRAS[*]}"
    run "$VPY" -m pip install --constraint "$CONSTRAINTS" "${EXTRA_REQS[@]}"
fi
if [[ -n "$CUDA_INSTALL" ]]; then
    run "$VPY" -m pip install --constraint "$CONSTRAINTS" "$CUDA_INSTALL"
fi

# --- checks inside the venv ---------------------------------------------------------------
run "$VPY" -c 'import numpy, onnxruntime, pydicom, runtime; print("medclear runtime imports: ok")'
if [[ -n "$TRT_VERSION" ]]; then
    # tensorrt must still come from JetPack's dist-packages, not from a pip copy in the venv.
    run "$VPY" -c 'import sys, tensorrt; p = tensorrt.__file__; print("tensorrt", tensorrt.__version__, "from", p); sys.exit(p.startswith(sys.prefix) and "tensorrt was pip-installed into the venv; remove it" or 0)'
fi
if [[ "$WITH_COMPILER" == 1 ]]; then
    run "$VPY" -m compiler --help
fi

# --- summary ----------------------------------------------------------------------------
if [[ ${#MISSING[@]} -eq 0 ]]; then
    log "ready: activate with 'source $VENV/bin/activate'; next: jetson/build_engines.sh"
else
    log "set up with ${#MISSING[@]} thing(s) missing:"
    for item in "${MISSING[@]}"; do log "  - $item"; done
    log "the ONNX Runtime backend works without them; TensorRT engines need them"
fi
