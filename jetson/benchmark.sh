#!/usr/bin/env bash
# Measure medclear's engines on this Jetson under a known power mode and locked clocks, with
# tegrastats recorded alongside, and put the settings back afterwards (also on failure).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: jetson/benchmark.sh [options] [-- extra benchmarks.latency arguments]

Latency on a Jetson depends on the power mode and on DVFS, so this script
  1. records the current settings: 'nvpmodel -q' and 'jetson_clocks --store FILE',
  2. sets the power mode ('nvpmodel -m N') and pins the clocks at their maximum ('jetson_clocks'),
  3. records 'tegrastats' to RESULTS/tegrastats.log while it runs
     'python -m benchmarks.latency' on each engine (results in RESULTS/),
  4. restores the clocks ('jetson_clocks --restore FILE') and the power mode on exit,
     whether the run succeeded or not.
nvpmodel, jetson_clocks and tegrastats need root; they run through sudo unless you are root.
Some power-mode changes require a reboot and nvpmodel asks first: answer 'no' and pick a mode
that needs none, or reboot and run again.

Options:
  --engines-dir DIR     engines to measure: every *.engine there (default: $MEDCLEAR_REPO/engines)
  --engine FILE         measure this engine (repeatable; replaces --engines-dir)
  --results DIR         output folder (default: $MEDCLEAR_REPO/results/jetson-<UTC time>)
  --power-mode N        nvpmodel mode id to measure in (default: 0, MAXN on most modules;
                        see /etc/nvpmodel.conf)
  --keep-power-mode     leave the power mode as it is
  --no-clocks           do not run jetson_clocks (DVFS stays on: noisier numbers)
  --interval MS         tegrastats sampling interval (default: 500)
  --sizes LIST          square image sides to time (default: 256,512,1024); each engine gets
                        those its profile accepts (a fixed-shape DLA engine: its one shape)
  --batches LIST        batch sizes (default: 1, the engines' default profile)
  --python PY           interpreter (default: $MEDCLEAR_REPO/.venv/bin/python, else python3)
EOF
    common_help MEDCLEAR_FAKE_L4T MEDCLEAR_FAKE_MODEL MEDCLEAR_FAKE_POWER_MODE
}

ENGINES_DIR="$MEDCLEAR_REPO/engines"
ENGINES=()
RESULTS=""
POWER_MODE=0
SET_POWER=1
SET_CLOCKS=1
INTERVAL=500
SIZES=256,512,1024
BATCHES=1
PYTHON=""
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --engines-dir) ENGINES_DIR="${2:?--engines-dir needs a folder}"; shift 2 ;;
        --engine) ENGINES+=("${2:?--engine needs a file}"); shift 2 ;;
        --results) RESULTS="${2:?--results needs a folder}"; shift 2 ;;
        --power-mode) POWER_MODE="${2:?--power-mode needs a mode id}"; shift 2 ;;
        --keep-power-mode) SET_POWER=0; shift ;;
        --no-clocks) SET_CLOCKS=0; shift ;;
        --interval) INTERVAL="${2:?--interval needs milliseconds}"; shift 2 ;;
        --sizes) SIZES="${2:?--sizes needs a list}"; shift 2 ;;
        --batches) BATCHES="${2:?--batches needs a list}"; shift 2 ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
PYTHON="${PYTHON:-$(default_python)}"
RESULTS="${RESULTS:-$MEDCLEAR_REPO/results/jetson-$(date -u +%Y%m%dT%H%M%SZ)}"
[[ "$POWER_MODE" =~ ^[0-9]+$ ]] || die "--power-mode must be a mode id (a number), not '$POWER_MODE'"
[[ "$INTERVAL" =~ ^[0-9]+$ ]] || die "--interval must be milliseconds, not '$INTERVAL'"
[[ "$SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--sizes must be a comma-separated list of sides, not '$SIZES'"
[[ "$BATCHES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--batches must be a comma-separated list, not '$BATCHES'"

L4T="$(detect_l4t)"
if [[ -z "$L4T" && "$DRY_RUN" != 1 ]]; then
    die "no /etc/nv_tegra_release: this is not a Jetson (nvpmodel/jetson_clocks/tegrastats are Jetson tools)"
fi
if [[ "$DRY_RUN" != 1 ]]; then
    for tool in nvpmodel jetson_clocks tegrastats; do
        command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; it comes with L4T (nvidia-l4t-tools)"
    done
    "$PYTHON" -c 'import benchmarks.latency' 2>/dev/null \
        || die "'$PYTHON' cannot import benchmarks.latency (run '$PYTHON -c \"import benchmarks.latency\"' to see why; jetson/setup.sh --with-bench installs its needs)"
    # Ask for the sudo password now, not in the middle of the run or in the exit trap.
    [[ "$(id -u)" == 0 ]] || sudo -v
fi

if [[ ${#ENGINES[@]} -eq 0 ]]; then
    shopt -s nullglob
    ENGINES=("$ENGINES_DIR"/*.engine)
    shopt -u nullglob
fi
if [[ ${#ENGINES[@]} -eq 0 ]]; then
    [[ "$DRY_RUN" == 1 ]] || die "$ENGINES_DIR: no *.engine files; build them with jetson/build_engines.sh"
    ENGINES=("$ENGINES_DIR/medclear_student.fp16.engine" "$ENGINES_DIR/medclear_student.int8.engine")
    log "warning: no engines in $ENGINES_DIR yet; planning for the default names"
fi

# fit_to_profile ENGINE SIZES BATCHES: print "SIZES BATCHES" trimmed to what the engine's
# optimization profile (its X.engine.json sidecar) accepts; a fixed-shape DLA engine gets its one
# shape. Without a sidecar (dry run before the build) the lists pass unchanged.
fit_to_profile() {
    if [[ ! -f "$1.json" ]]; then
        printf '%s %s\n' "$2" "$3"
        return
    fi
    python3 - "$1.json" "$2" "$3" <<'EOF'
import json
import sys

profile = json.load(open(sys.argv[1]))["profile"]
lo, opt, hi = profile["min"], profile["opt"], profile["max"]


def fit(values, low, high, fallback):
    kept = [v for v in map(int, values.split(",")) if low <= v <= high]
    return ",".join(map(str, kept or [fallback]))


print(fit(sys.argv[2], max(lo[2:]), min(hi[2:]), opt[2]), fit(sys.argv[3], lo[0], hi[0], opt[0]))
EOF
}

ORIGINAL_MODE="$(detect_power_mode)"
if [[ -z "$ORIGINAL_MODE" ]]; then
    [[ "$DRY_RUN" == 1 ]] || die "cannot read the current power mode from 'nvpmodel -q'"
    ORIGINAL_MODE="<current>"
fi
CLOCKS_FILE="$RESULTS/jetson_clocks.before.conf"
TEGRASTATS_LOG="$RESULTS/tegrastats.log"
TEGRASTATS_PID=""
CLOCKS_STORED=0
MODE_CHANGED=0

# Undo, in reverse order, only what this run changed. Runs on every exit.
restore() {
    local status=$?
    trap - EXIT
    set +e
    if [[ "$DRY_RUN" == 1 && "$TEGRASTATS_PID" == planned ]]; then
        printf 'PLAN: (on exit) stop the tegrastats job started above\n'
    elif [[ -n "$TEGRASTATS_PID" ]]; then
        # sudo passes the signal on to tegrastats; the job is root's, so signal it as root.
        as_root kill "$TEGRASTATS_PID"
        wait "$TEGRASTATS_PID" 2>/dev/null
    fi
    if [[ "$MODE_CHANGED" == 1 ]]; then
        as_root nvpmodel -m "$ORIGINAL_MODE"
    fi
    if [[ "$CLOCKS_STORED" == 1 ]]; then
        as_root jetson_clocks --restore "$CLOCKS_FILE"
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
        log "end of plan; nothing was changed"
    else
        log "settings restored (power mode $ORIGINAL_MODE); results in $RESULTS"
    fi
    exit "$status"
}
trap restore EXIT

run mkdir -p "$RESULTS"
# What the numbers were measured on, before anything changes.
if [[ "$DRY_RUN" == 1 ]]; then
    printf 'PLAN: write %s (board, L4T, TensorRT, power mode before)\n' "$RESULTS/environment.txt"
else
    {
        printf 'date_utc: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'board: %s\n' "$(detect_model)"
        printf 'l4t: %s\n' "$L4T"
        printf 'jetpack: %s\n' "$(jetpack_for_l4t "$L4T" | cut -d'|' -f1)"
        printf 'tensorrt: %s\n' "$(detect_trt "$PYTHON")"
        printf 'power_mode_before: %s\n' "$ORIGINAL_MODE"
        printf 'power_mode_measured: %s\n' "$([[ "$SET_POWER" == 1 ]] && echo "$POWER_MODE" || echo "$ORIGINAL_MODE")"
        printf 'jetson_clocks: %s\n' "$([[ "$SET_CLOCKS" == 1 ]] && echo on || echo off)"
        printf 'nvpmodel -q:\n'
        nvpmodel -q 2>&1 | sed 's/^/  /'
    } >"$RESULTS/environment.txt"
fi

if [[ "$SET_CLOCKS" == 1 ]]; then
    as_root jetson_clocks --store "$CLOCKS_FILE"
    CLOCKS_STORED=1
fi
if [[ "$SET_POWER" == 1 && "$POWER_MODE" != "$ORIGINAL_MODE" ]]; then
    MODE_CHANGED=1
    as_root nvpmodel -m "$POWER_MODE"
fi
if [[ "$SET_CLOCKS" == 1 ]]; then
    as_root jetson_clocks
fi

if [[ "$DRY_RUN" == 1 ]]; then
    printf 'PLAN: (background) tegrastats --interval %s --logfile %s\n' "$INTERVAL" "$(shell_word "$TEGRASTATS_LOG")"
    TEGRASTATS_PID=planned
else
    if [[ "$(id -u)" == 0 ]]; then
        tegrastats --interval "$INTERVAL" --logfile "$TEGRASTATS_LOG" &
    else
        sudo tegrastats --interval "$INTERVAL" --logfile "$TEGRASTATS_LOG" &
    fi
    TEGRASTATS_PID=$!
    log "tegrastats (pid $TEGRASTATS_PID) -> $TEGRASTATS_LOG"
fi

for engine in "${ENGINES[@]}"; do
    name="$(basename "$engine" .engine)"
    read -r sizes batches <<<"$(fit_to_profile "$engine" "$SIZES" "$BATCHES")"
    run "$PYTHON" -m benchmarks.latency "$engine" --sizes "$sizes" --batches "$batches" \
        --out "$RESULTS/latency-$name.json" "${EXTRA[@]}"
done
