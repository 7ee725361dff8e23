# shellcheck shell=bash
# Shared helpers for the jetson/*.sh scripts: logging, dry-run plans and device detection.
# Sourced, never run. Detection honours MEDCLEAR_FAKE_* variables so that the plans can be
# tested on machines without a Jetson:
#   MEDCLEAR_FAKE_L4T="R36.4.0"      L4T release instead of /etc/nv_tegra_release
#   MEDCLEAR_FAKE_MODEL="..."        board name instead of /proc/device-tree/model
#   MEDCLEAR_FAKE_TRT="10.3.0"|none  TensorRT Python bindings version (none: missing)
#   MEDCLEAR_FAKE_CUDA_PY="cuda-python"|"pycuda"|none   CUDA Python binding found
#   MEDCLEAR_FAKE_DLA=2              number of DLA cores
#   MEDCLEAR_FAKE_POWER_MODE=0       current nvpmodel mode id
#   MEDCLEAR_FAKE_PYTHON_VERSION=3.10  system Python version (setup.sh)
#   MEDCLEAR_NV_TEGRA_RELEASE=FILE   read this instead of /etc/nv_tegra_release

MEDCLEAR_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MEDCLEAR_REPO
DRY_RUN=0

# The end of every script's --help: the options they all share and the test variables.
common_help() {
    cat <<EOF
  --dry-run             print the plan (lines starting "PLAN: ") and change nothing
  -h, --help            show this help

Environment (for tests and planning elsewhere): $* (see jetson/lib.sh).
EOF
}

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# One word as a shell would need it: bare when safe, else single-quoted.
shell_word() {
    if [[ "$1" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then printf '%s' "$1"; else printf '%s' "${1@Q}"; fi
}

# Print a command the way it would be run: PLAN-prefixed in a dry run, executed otherwise.
run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        printf 'PLAN:'
        local word
        for word in "$@"; do printf ' %s' "$(shell_word "$word")"; done
        printf '\n'
    else
        log "+ $*"
        "$@"
    fi
}

# Root commands (nvpmodel, jetson_clocks, tegrastats) go through sudo unless we are root.
as_root() {
    if [[ "$(id -u)" == 0 ]]; then run "$@"; else run sudo "$@"; fi
}

# The L4T release as "R<major>.<revision>", e.g. R36.4.0; empty when not a Jetson.
detect_l4t() {
    if [[ -n "${MEDCLEAR_FAKE_L4T:-}" ]]; then
        printf '%s\n' "$MEDCLEAR_FAKE_L4T"
        return
    fi
    local line major revision version release_file="${MEDCLEAR_NV_TEGRA_RELEASE:-/etc/nv_tegra_release}"
    if [[ -r "$release_file" ]]; then
        # "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ..."
        line="$(head -n 1 "$release_file")"
        major="$(sed -n 's/^# R\([0-9]*\) .*/\1/p' <<<"$line")"
        revision="$(sed -n 's/.*REVISION: \([0-9.]*\).*/\1/p' <<<"$line")"
        if [[ -n "$major" && -n "$revision" ]]; then
            printf 'R%s.%s\n' "$major" "$revision"
            return
        fi
    fi
    if command -v dpkg-query >/dev/null 2>&1; then
        # nvidia-l4t-core version looks like 36.4.0-20240912212859
        version="$(dpkg-query -W -f='${Version}' nvidia-l4t-core 2>/dev/null || true)"
        if [[ -n "$version" ]]; then
            printf 'R%s\n' "${version%%-*}"
            return
        fi
    fi
    printf '\n'
}

# "JETPACK|TENSORRT|CUDA|STATUS" for an L4T release. STATUS: supported, python-too-old,
# unconfirmed or unknown. The 7.x rows come from third-party reports, not NVIDIA's tables.
jetpack_for_l4t() {
    case "$1" in
        R35.*) printf '5.1.x|8.5|11.4|python-too-old\n' ;;
        R36.2*) printf '6.0 DP|8.6|12.2|supported\n' ;;
        R36.3*) printf '6.0|8.6|12.2|supported\n' ;;
        R36.4.0*) printf '6.1|10.3|12.6|supported\n' ;;
        R36.4.3*) printf '6.2|10.3|12.6|supported\n' ;;
        R36.4.4*) printf '6.2.1|10.3|12.6|supported\n' ;;
        R36.4*) printf '6.1/6.2.x|10.3|12.6|supported\n' ;;
        R38.2*) printf '7.0|10.13 (unconfirmed)|13.0 (unconfirmed)|unconfirmed\n' ;;
        R38.4*) printf '7.1|10.13 (unconfirmed)|13.0 (unconfirmed)|unconfirmed\n' ;;
        R3[6-9].*) printf 'unknown|unknown|unknown|unconfirmed\n' ;;
        *) printf 'unknown|unknown|unknown|unknown\n' ;;
    esac
}

detect_model() {
    if [[ -n "${MEDCLEAR_FAKE_MODEL:-}" ]]; then
        printf '%s\n' "$MEDCLEAR_FAKE_MODEL"
    elif [[ -r /proc/device-tree/model ]]; then
        tr -d '\0' </proc/device-tree/model
        printf '\n'
    else
        printf 'unknown\n'
    fi
}

# TensorRT Python bindings version as seen by PYTHON (default python3); empty if missing.
detect_trt() {
    local python="${1:-python3}"
    if [[ -n "${MEDCLEAR_FAKE_TRT:-}" ]]; then
        [[ "$MEDCLEAR_FAKE_TRT" == none ]] || printf '%s\n' "$MEDCLEAR_FAKE_TRT"
        return
    fi
    "$python" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true
}

# Which CUDA Python binding PYTHON can import: cuda-python, pycuda or empty.
detect_cuda_python() {
    local python="${1:-python3}"
    if [[ -n "${MEDCLEAR_FAKE_CUDA_PY:-}" ]]; then
        [[ "$MEDCLEAR_FAKE_CUDA_PY" == none ]] || printf '%s\n' "$MEDCLEAR_FAKE_CUDA_PY"
        return
    fi
    if "$python" -c 'from cuda import cudart' >/dev/null 2>&1 \
        || "$python" -c 'from cuda.bindings import runtime' >/dev/null 2>&1; then
        printf 'cuda-python\n'
    elif "$python" -c 'import pycuda.driver' >/dev/null 2>&1; then
        printf 'pycuda\n'
    fi
}

# Number of DLA cores TensorRT sees (0 on Orin Nano, Thor and non-Jetson machines).
detect_dla() {
    local python="${1:-python3}"
    if [[ -n "${MEDCLEAR_FAKE_DLA:-}" ]]; then
        printf '%s\n' "$MEDCLEAR_FAKE_DLA"
        return
    fi
    "$python" -c 'import tensorrt as trt; print(trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores)' \
        2>/dev/null || printf '0\n'
}

# Current nvpmodel mode id (the last line of `nvpmodel -q` is the number); empty if unknown.
detect_power_mode() {
    if [[ -n "${MEDCLEAR_FAKE_POWER_MODE:-}" ]]; then
        printf '%s\n' "$MEDCLEAR_FAKE_POWER_MODE"
        return
    fi
    if command -v nvpmodel >/dev/null 2>&1; then
        nvpmodel -q 2>/dev/null | tail -n 1 | tr -dc '0-9'
        printf '\n'
    else
        printf '\n'
    fi
}

# The interpreter the scripts use: --python, else the repository's .venv, else python3.
default_python() {
    if [[ -x "$MEDCLEAR_REPO/.venv/bin/python" ]]; then
        printf '%s\n' "$MEDCLEAR_REPO/.venv/bin/python"
    else
        printf 'python3\n'
    fi
}
