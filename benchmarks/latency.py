"""Latency of the runtime's backends: ``python -m benchmarks.latency [MODEL ...] [options]``.

For every model (student ONNX through the runtime's ONNX Runtime backend, TensorRT engines
where the machine has TensorRT, the teacher in PyTorch as the reference) and every size and
batch: warm-up, timed runs within a time budget, p50/p95/p99, images/s, the stage split,
and achieved GFLOP/s against counted FLOPs and a matmul ceiling measured in the same run.
Then end to end on DICOM files, cold start and peak memory in fresh processes, the targets
with pass/miss and margin, and the seed's claims. Writes JSON (and a PNG with ``--plot``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import inputs, process, report
from benchmarks.flops import matmul_ceiling
from benchmarks.record import header, refuse_unwritable, write_json
from benchmarks.runners import Runner, SkipModel, open_runner, refuse_missing_models
from benchmarks.targets import claim, efficiency, judge
from benchmarks.timing import Stopwatch, summarize, timed_runs
from runtime.backends import BackendError
from runtime.image_contract import denormalize_frames, normalize_frames
from runtime.pipeline import add_noise_map, noise_map_level
from runtime.pixels import PixelEncoding, from_modality
from runtime.tiling import TilePlan, pad_frames

DEFAULT_MODELS = ("models/medclear_student.fp32.onnx", "models/medclear_student.int8.onnx")
CT_ENCODING = PixelEncoding(bits_allocated=16, bits_stored=16, signed=True, photometric="MONOCHROME2", modality="CT")
REFERENCE_SIZE, REFERENCE_BATCH = 512, 1


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("models", nargs="*", help="model files: .onnx (ONNX Runtime), .engine (TensorRT); "
                        f"default: {', '.join(DEFAULT_MODELS)} and models/*.engine where present")
    parser.add_argument("--teacher", help="teacher checkpoint (.pt) timed in PyTorch as the reference, or "
                        "arch:unetpp[:base_width=N] for an untrained teacher (timing only)")
    parser.add_argument("--sizes", type=_ints, default=[256, 512, 1024], help="square image sides")
    parser.add_argument("--batches", type=_ints, default=[1, 2, 4], help="batch sizes")
    parser.add_argument("--teacher-sizes", type=_ints, default=[256, 512], help="sides for the (slow) teacher")
    parser.add_argument("--teacher-batches", type=_ints, default=[1], help="batch sizes for the teacher")
    parser.add_argument("--runs", type=int, default=50, help="most timed runs per configuration")
    parser.add_argument("--min-runs", type=int, default=3, help="fewest timed runs, even past the budget")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per configuration")
    parser.add_argument("--budget-s", type=float, default=3.0, help="time budget per configuration")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="intra-op threads")
    parser.add_argument("--ceiling-s", type=float, default=1.5, help="seconds per matmul-ceiling measurement")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh processes for cold start")
    parser.add_argument("--no-dicom", action="store_true", help="skip DICOM end to end")
    parser.add_argument("--no-process", action="store_true", help="skip cold start and peak memory")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency.json"), help="JSON record")
    parser.add_argument("--plot", type=Path, nargs="?", const=Path("benchmarks/results/latency.png"),
                        help="also write a PNG chart (default path when given without one)")
    args = parser.parse_args(argv)
    refuse_missing_models(parser, args.models, args.teacher)
    refuse_unwritable(parser, args.out, args.plot)
    if args.runs < 1 or args.min_runs < 1 or min(args.batches) < 1:
        parser.error("--runs, --min-runs and every --batches value must be at least 1")
    if not args.models:
        args.models = [m for m in DEFAULT_MODELS if Path(m).is_file()] + sorted(str(p) for p in Path("models").glob("*.engine"))
        if not args.models and not args.teacher:
            parser.error("no model files given and none of the defaults exist; pass MODEL files")
    return args


def padded_side(runner: Runner, size: int) -> int:
    """The side a ``size``² image is padded to for this model (its size multiple)."""
    return TilePlan(size_multiple=runner.size_multiple).padded_side(size)


def outside_profile(runner: Runner, size: int, batch: int) -> str | None:
    """Why the model cannot take a batch of ``batch`` ``size``² images, or None when it can.

    A TensorRT engine accepts only the shapes of its optimization profile (e.g. at most the
    batch it was built for); an ONNX model with dynamic axes takes any.
    """
    side = padded_side(runner, size)
    try:
        runner.backend.constraints.check(runner.input_shape(batch, side, side))
    except BackendError as error:
        return f"size {size}, batch {batch}: {error}"
    return None


def time_configuration(runner: Runner, size: int, batch: int, args: argparse.Namespace) -> dict:
    """Time one (model, size, batch): preprocess / [h2d] / compute / [d2h] / postprocess. A
    noise-map model's preprocessing measures the noise level and adds its map, as the runtime does."""
    rng = np.random.default_rng(size * 131 + batch)
    hu = rng.normal(40.0, 300.0, size=(batch, size, size)).astype(np.float32)
    padded = padded_side(runner, size)

    contract = runner.backend.contract
    spec = contract.normalization_for("CT")  # the model's own CT normalization

    def one_run() -> dict[str, float]:
        watch = Stopwatch()
        with watch("preprocess"):
            normalized, states = normalize_frames(hu, spec)
            level = noise_map_level(contract, normalized, states, "CT")
            model_input = add_noise_map(pad_frames(normalized, padded, padded)[:, np.newaxis], level)
        output, stages = runner.run(model_input)
        with watch("postprocess"):
            _ = from_modality(denormalize_frames(output[:, 0, :size, :size], states), CT_ENCODING)
        return {**watch.times, **stages}

    samples = timed_runs(one_run, warmup=args.warmup, runs=args.runs, budget_s=args.budget_s, min_runs=args.min_runs)
    stages = summarize(samples)
    total = stages["total"]
    flops = runner.flops(runner.input_shape(batch, padded, padded))
    compute_s = stages["compute"]["p50_ms"] / 1e3
    return {
        "model": runner.label, "kind": runner.kind, "precision": runner.precision, "size": size, "batch": batch,
        "runs": len(samples),
        "p50_ms": total["p50_ms"], "p95_ms": total["p95_ms"], "p99_ms": total["p99_ms"],
        "per_image_p50_ms": total["p50_ms"] / batch,
        "images_per_s": 1e3 * batch / total["p50_ms"],
        "stages": stages,
        "flops": flops,
        "achieved_gflops": flops / compute_s / 1e9 if flops else None,
    }


def measure_models(specs: list[tuple[str, list[int], list[int]]], args: argparse.Namespace) -> tuple[list, list, dict]:
    """Latency rows for every model spec; what was skipped with the reason (a model this machine
    cannot run, or a size and batch outside an engine's profile); model info."""
    rows, skipped, models = [], [], {}
    for spec, sizes, batches in specs:
        try:
            runner = open_runner(spec, args.threads)
        except SkipModel as reason:
            skipped.append({"model": spec, "reason": str(reason)})
            print(f"skip {spec}: {reason}", file=sys.stderr)
            continue
        models[runner.label] = {"spec": spec, "kind": runner.kind, "engine": runner.engine,
                                "precision": runner.precision, "size_multiple": runner.size_multiple, **runner.info}
        try:
            for size in sizes:
                for batch in batches:
                    reason = outside_profile(runner, size, batch)
                    if reason is not None:
                        skipped.append({"model": runner.label, "size": size, "batch": batch, "reason": reason})
                        print(f"skip {runner.label}: {reason}", file=sys.stderr)
                        continue
                    row = time_configuration(runner, size, batch, args)
                    rows.append(row)
                    print(report.latency_line(row), file=sys.stderr)
        finally:
            runner.close()
    return rows, skipped, models


def _row(rows: list[dict], model: str, size: int = REFERENCE_SIZE, batch: int = REFERENCE_BATCH) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["size"] == size and r["batch"] == batch), None)


def covers(spec: str, modality: str) -> bool:
    """Whether an ONNX model's contract takes ``modality`` (the DICOM and process timings run CT
    slices and a CR radiograph; a model released for other modalities would skip them)."""
    import onnx

    from compiler.onnx_io import read_contract

    return read_contract(onnx.load(spec, load_external_data=False)).covers(modality)


def measure_dicom(onnx_models: list[str], args: argparse.Namespace, workdir: Path) -> list[dict]:
    """In-process DICOM read -> enhance -> write for the 512^2 CT and the 1024^2 CT (models
    released for other modalities only, such as the MR x2 model, are left out)."""
    from benchmarks.e2e import time_dicom_enhance

    results = []
    cases = [inputs.ct_512(), inputs.ct_1024(workdir)]
    for model in onnx_models:
        if not covers(model, "CT"):
            print(f"{Path(model).name}: not released for CT; no DICOM CT timing", file=sys.stderr)
            continue
        for case in cases:
            results.append(time_dicom_enhance(model, case, args.threads, workdir, budget_s=args.budget_s,
                                              runs=args.runs, min_runs=args.min_runs))
            print(report.dicom_line(results[-1]), file=sys.stderr)
    return results


def measure_processes(onnx_models: list[str], args: argparse.Namespace) -> dict:
    """Cold start on the 512^2 CT and peak memory on the 2k X-ray, each in fresh processes (models
    that do not take both, such as the x2 models released for one modality, are left out)."""
    ct, xray = inputs.ct_512(), inputs.xray_2k()
    result = {"python_startup_s": process.python_startup(), "cold_start": [], "peak_memory": []}
    for model in onnx_models:
        if not (covers(model, "CT") and covers(model, "CR")):
            print(f"{Path(model).name}: not released for both CT and CR; no process timing", file=sys.stderr)
            continue
        cold = process.cold_start(model, ct.path, args.threads, repeats=args.cold_repeats)
        result["cold_start"].append({"model": Path(model).name, "input": ct.label, **cold})
        memory = process.peak_memory(model, xray.path, args.threads)
        result["peak_memory"].append({"model": Path(model).name, "input": xray.label, **memory})
        print(report.process_line(result["cold_start"][-1], result["peak_memory"][-1]), file=sys.stderr)
    return result


def judge_all(rows: list[dict], models: dict[str, dict], dicom: list[dict], processes: dict,
              ceiling: dict) -> tuple[list[dict], list[dict]]:
    """Targets (pass/miss with margins) and the seed's claims from everything measured."""
    targets: list[dict] = []
    students = [label for label, m in models.items() if m["kind"] in ("onnxruntime", "tensorrt")]
    teachers = [label for label, m in models.items() if m.get("role") == "teacher"]
    teacher_row = _row(rows, teachers[0]) if teachers else None
    for label in students:
        row = _row(rows, label)
        if models[label]["precision"] == "int8" and models[label]["kind"] == "onnxruntime":
            targets.append(judge("int8_512_b1_p50_ms", row["p50_ms"] if row else None, label,
                                 "" if row else "512x512 batch 1 not in --sizes/--batches"))
        speedup = teacher_row["p50_ms"] / row["p50_ms"] if row and teacher_row else None
        targets.append(judge("speedup_vs_teacher", speedup, f"{label} vs {teachers[0] if teachers else 'teacher'}",
                             "pass --teacher CKPT and include 512 in --sizes/--teacher-sizes"))
    for entry in dicom:
        if entry["input_key"] == "ct1024":
            targets.append(judge("dicom_ct1024_e2e_s", entry.get("p50_s"), entry["model"], entry.get("error") or ""))
    for label in students:
        if label.endswith(".int8.onnx"):
            fraction, fp32 = int8_size_fraction(Path(models[label]["spec"]))
            targets.append(judge("int8_size_fraction", fraction, f"{label} / {fp32.name}",
                                 f"{fp32} not found beside it"))
    for cold in processes.get("cold_start", []):
        targets.append(judge("cold_start_s", cold["wall_s"], cold["model"], cold.get("error") or ""))
    for memory in processes.get("peak_memory", []):
        targets.append(judge("peak_memory_xray2k_mb", memory["peak_rss_mb"], memory["model"], memory.get("error") or ""))
    for label in models:
        row = _row(rows, label) or next((r for r in rows if r["model"] == label), None)
        targets.append(efficiency(f"{label} ({row['size']}^2, batch {row['batch']})" if row else label,
                                  row["achieved_gflops"] if row else None, ceiling.get("gflops")))
    return targets, seed_claims(rows, models, dicom, students, teachers)


def int8_size_fraction(int8: Path) -> tuple[float | None, Path]:
    """Size of ``X.int8.onnx`` over its sibling ``X.fp32.onnx`` (None when that file is absent)."""
    fp32 = int8.with_name(int8.name.replace(".int8.onnx", ".fp32.onnx"))
    return (int8.stat().st_size / fp32.stat().st_size if fp32.is_file() else None), fp32


def seed_claims(rows: list[dict], models: dict[str, dict], dicom: list[dict], students: list[str],
                teachers: list[str]) -> list[dict]:
    """The seed's four headline claims beside what was measured here."""
    engines = [label for label in students if models[label]["kind"] == "tensorrt"]
    trt_rows = [r for r in rows if r["model"] in engines and r["size"] == REFERENCE_SIZE]
    claims = [claim("trt_2ms", f"{min(r['per_image_p50_ms'] for r in trt_rows):.2f} ms/image" if trt_rows else "n/a",
                    min(r["per_image_p50_ms"] for r in trt_rows) <= 2.0 if trt_rows else None,
                    "TensorRT engines need a GPU runner" if not trt_rows else "")]
    ct1024 = [d for d in dicom if d["input_key"] == "ct1024" and d.get("p50_s")]
    claims.append(claim("ct1024_0p8s", "; ".join(f"{d['model']}: {d['p50_s']:.3f} s" for d in ct1024) or "n/a",
                        all(d["p50_s"] <= 0.8 for d in ct1024) if ct1024 else None, "DICOM read -> enhance -> write, CPU"))
    sizes = [(label, int8_size_fraction(Path(models[label]["spec"]))[0]) for label in students if ".int8." in label]
    sizes = [(label, fraction) for label, fraction in sizes if fraction is not None]
    claims.append(claim("int8_75pct_smaller", "; ".join(f"{label}: {1 - f:.0%} smaller" for label, f in sizes) or "n/a",
                        all(f <= 0.25 for _, f in sizes) if sizes else None))
    teacher_row = _row(rows, teachers[0]) if teachers else None
    fp32 = [label for label in students if models[label]["precision"] == "fp32"]
    speedups = [(label, teacher_row["p50_ms"] / _row(rows, label)["p50_ms"]) for label in fp32
                if teacher_row and _row(rows, label)]
    claims.append(claim("distilled_3x_faster", "; ".join(f"{label}: {s:.1f}x" for label, s in speedups) or "n/a",
                        all(s >= 3.0 for _, s in speedups) if speedups else None,
                        "FP32 student (ORT) vs teacher (PyTorch), 512x512 batch 1"))
    return claims


def main(argv: list[str] | None = None) -> int:
    """Run the latency benchmark; returns the process exit status."""
    args = parse_args(argv)
    specs = [(m, args.sizes, args.batches) for m in args.models]
    if args.teacher:
        specs.append((args.teacher, args.teacher_sizes, args.teacher_batches))
    ceiling = matmul_ceiling(args.threads, seconds=args.ceiling_s)
    print(f"matmul ceiling: {ceiling['gflops']:.1f} GFLOP/s (float32 {ceiling['n']}^2, {args.threads} threads)",
          file=sys.stderr)
    rows, skipped, models = measure_models(specs, args)
    for model in models.values():
        model["role"] = "teacher" if model["spec"] == args.teacher else "model"
    onnx_models = [m["spec"] for m in models.values() if m["kind"] == "onnxruntime"]
    dicom, processes = [], {}
    with tempfile.TemporaryDirectory(prefix="medclear-bench-") as workdir:
        if not args.no_dicom:
            dicom = measure_dicom(onnx_models, args, Path(workdir))
        if not args.no_process:
            processes = measure_processes(onnx_models, args)
    # The ceiling is the best of a measurement before and after: a busy moment only lowers it.
    after = matmul_ceiling(args.threads, seconds=args.ceiling_s)
    ceiling = {**ceiling, "gflops": max(ceiling["gflops"], after["gflops"]),
               "gflops_before": ceiling["gflops"], "gflops_after": after["gflops"]}
    for row in rows:
        # The fastest this batch could run if its convolutions reached the matmul ceiling.
        row["ceiling_bound_ms"] = row["flops"] / (ceiling["gflops"] * 1e6) if row["flops"] else None
    targets, claims = judge_all(rows, models, dicom, processes, ceiling)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record = {**header("latency", settings), "matmul_ceiling": ceiling, "models": models, "skipped": skipped,
              "latency": rows, "dicom_end_to_end": dicom, "processes": processes, "targets": targets,
              "claims": claims}
    print(report.latency_report(record))
    write_json(record, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.plot:
        report.plot_latency(record, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
