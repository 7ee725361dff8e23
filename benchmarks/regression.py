"""CI latency regression check: ``python -m benchmarks.regression [--baseline FILE] [--update]``.

Absolute times mean little on a shared runner, so each model is timed interleaved with a fixed
reference workload (a small ONNX convolution stack of known FLOPs, see benchmarks.synthetic) on
the same backend and thread count; the median ratio model/reference is compared with the ratio
in the baseline file. A ratio more than ``--tolerance`` above the baseline's fails (exit 1);
``--update`` rewrites the baseline on purpose. Exit 2 for usage errors (no baseline, unknown model).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.flops import onnx_conv_flops
from benchmarks.record import file_record, header, refuse_unwritable, write_json
from benchmarks.synthetic import save_conv_stack
from runtime.backends import Backend, BackendError, select_backend
from runtime.pipeline import synthetic_input

DEFAULT_BASELINE = Path("benchmarks/baselines/cpu_onnxruntime.json")
DEFAULT_MODELS = ("models/medclear_student.int8.onnx", "models/medclear_student.fp32.onnx")
BASELINE_FORMAT = "medclear-latency-baseline/1"
REFERENCE = {"channels": 16, "layers": 4, "seed": 0}  # the built-in reference workload
EXIT_OK, EXIT_REGRESSED, EXIT_USAGE = 0, 1, 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.regression", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help=f"baseline JSON (default: {DEFAULT_BASELINE})")
    parser.add_argument("--model", action="append", dest="models", metavar="FILE",
                        help="model to check (repeatable; default: the shipped student models present)")
    parser.add_argument("--reference", metavar="FILE",
                        help="reference workload model (default: the built-in ONNX conv stack); on a GPU "
                             "runner a TensorRT engine built from --write-reference's ONNX")
    parser.add_argument("--write-reference", type=Path, metavar="ONNX", help="write the built-in reference ONNX and exit")
    parser.add_argument("--update", action="store_true", help="measure and rewrite the baseline file")
    parser.add_argument("--tolerance", type=float, default=0.25,
                        help="allowed relative increase of the model/reference ratio (default: 0.25)")
    parser.add_argument("--size", type=int, help="image side (default: the baseline's, else 256)")
    parser.add_argument("--batch", type=int, help="batch size (default: the baseline's, else 1)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the baseline's, else all cores)")
    parser.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto")
    parser.add_argument("--rounds", type=int, default=400, help="most interleaved rounds per model (default: 400)")
    parser.add_argument("--budget-s", type=float, default=15.0, help="time budget per model (default: 15)")
    parser.add_argument("--out", type=Path, help="also write this run's measurements as JSON")
    parser.add_argument("--note", help="with --update: a provenance note stored in the baseline")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    refuse_unwritable(parser, args.out, args.baseline if args.update else None)
    return args


def _time_once(backend: Backend, batch: np.ndarray) -> float:
    begin = time.perf_counter()
    backend.infer(batch)
    return time.perf_counter() - begin


def interleaved_ratio(model: Backend, reference: Backend, batch: np.ndarray, rounds: int, budget_s: float,
                      min_rounds: int = 9) -> dict:
    """Median model and reference seconds from alternating runs on the images ``batch``
    ``[N, 1, H, W]`` (each backend gets them as its input: a noise-map model with its map), and
    their ratio."""
    inputs = {b: synthetic_input(batch, b.contract.input_channels) for b in (model, reference)}
    for backend in (model, reference) * 5:  # warm-up: allocations, caches, thread pools
        backend.infer(inputs[backend])
    model_s, reference_s = [], []
    started = time.perf_counter()
    for index in range(rounds):
        # Alternate which goes first so neither always follows the other's cache footprint.
        pair = (model, reference) if index % 2 == 0 else (reference, model)
        first, second = (_time_once(b, inputs[b]) for b in pair)
        model_s.append(first if index % 2 == 0 else second)
        reference_s.append(second if index % 2 == 0 else first)
        if index + 1 >= min_rounds and time.perf_counter() - started > budget_s:
            break
    model_median, reference_median = float(np.median(model_s)), float(np.median(reference_s))
    return {"model_ms": model_median * 1e3, "reference_ms": reference_median * 1e3,
            "ratio": model_median / reference_median, "rounds": len(model_s)}


def compare(name: str, ratio: float, baseline_ratio: float, tolerance: float) -> tuple[bool, str]:
    """(passed, message) for a measured ratio against the baseline's."""
    change = ratio / baseline_ratio - 1.0
    verdict = "ok" if change <= tolerance else "REGRESSION"
    message = (f"{verdict}: {name}: latency ratio to the reference workload {ratio:.3f}, baseline {baseline_ratio:.3f} "
               f"({change:+.0%}, tolerance +{tolerance:.0%})")
    if change > tolerance:
        message += "; if the slowdown is intended, rerun with --update and commit the baseline"
    return change <= tolerance, message


def _settings(args: argparse.Namespace, baseline: dict | None) -> dict:
    stored = (baseline or {}).get("settings", {})
    return {
        "size": args.size or stored.get("size", 256),
        "batch": args.batch or stored.get("batch", 1),
        "threads": args.threads or stored.get("threads", len(os.sched_getaffinity(0))),
        "backend": args.backend,
        "reference": args.reference or f"builtin conv_stack {REFERENCE}",
    }


def _load_baseline(path: Path) -> dict | None:
    import json

    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path}: not a {BASELINE_FORMAT} file")
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the check (or ``--update``); returns the exit status."""
    args = parse_args(argv)
    if args.write_reference:
        save_conv_stack(args.write_reference, **REFERENCE)
        print(f"wrote {args.write_reference}")
        return EXIT_OK
    try:
        baseline = _load_baseline(args.baseline)
    except (ValueError, OSError) as error:
        print(f"regression: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if baseline is None and not args.update:
        print(f"regression: error: {args.baseline}: baseline file not found; create it with --update", file=sys.stderr)
        return EXIT_USAGE
    models = args.models or [m for m in DEFAULT_MODELS if Path(m).is_file()]
    if not models:
        print("regression: error: no model files given and no shipped models found; pass --model FILE", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args, None if args.update else baseline)
    if baseline is not None and not args.update and baseline["settings"].get("reference") != settings["reference"]:
        print(f"regression: error: {args.baseline} was measured against reference "
              f"{baseline['settings'].get('reference')!r}, this run uses {settings['reference']!r}; "
              "pass the same --reference or --update", file=sys.stderr)
        return EXIT_USAGE
    rng = np.random.default_rng(0)
    batch = rng.random((settings["batch"], 1, settings["size"], settings["size"]), dtype=np.float32)
    results, failures = {}, []
    with tempfile.TemporaryDirectory(prefix="medclear-regression-") as workdir:
        reference_path = args.reference or str(save_conv_stack(Path(workdir) / "reference.onnx", **REFERENCE))
        try:
            with select_backend(reference_path, args.backend, threads=settings["threads"]) as reference:
                for model_path in models:
                    with select_backend(model_path, args.backend, threads=settings["threads"]) as model:
                        measured = interleaved_ratio(model, reference, batch, args.rounds, args.budget_s)
                    results[Path(model_path).name] = {**measured, "file": file_record(model_path)}
                reference_record = {"path": reference_path, "settings": REFERENCE if not args.reference else None,
                                    "flops": _flops(reference_path, batch.shape)}
        except BackendError as error:
            print(f"regression: error: {error}", file=sys.stderr)
            return EXIT_USAGE
    for name, measured in results.items():
        line = (f"{name}: {measured['model_ms']:.2f} ms, reference {measured['reference_ms']:.2f} ms, "
                f"ratio {measured['ratio']:.3f} ({measured['rounds']} interleaved rounds)")
        if args.update:
            print(line)
            continue
        known = baseline["models"].get(name)
        if known is None:
            print(f"regression: error: {name} has no entry in {args.baseline}; add it with --update", file=sys.stderr)
            return EXIT_USAGE
        passed, message = compare(name, measured["ratio"], known["ratio"], args.tolerance)
        print(line)
        print(message, file=sys.stdout if passed else sys.stderr)
        if not passed:
            failures.append(name)
    record = {**header("regression", settings), "format": BASELINE_FORMAT, "note": args.note,
              "reference": reference_record, "models": results}
    if args.update:
        write_json(record, args.baseline)
        print(f"updated {args.baseline}")
    if args.out:
        write_json({**record, "baseline": str(args.baseline), "tolerance": args.tolerance, "failed": failures}, args.out)
    return EXIT_REGRESSED if failures else EXIT_OK


def _flops(path: str, shape: tuple[int, ...]) -> float | None:
    try:
        return onnx_conv_flops(path, shape) if path.endswith(".onnx") else None
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
