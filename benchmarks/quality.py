"""Image quality on the held-out split: ``python -m benchmarks.quality [MODEL ...] [options]``.

PSNR / SSIM / FSIM (trainer.metrics.image_quality: CT in both conventions, full HU range and
soft-tissue window) of the degraded input, the classical baselines (trainer.baselines, their
strength tuned on an image outside the held-out set), the teacher (PyTorch checkpoint) and the
student models (ONNX through the runtime's backend), per modality and dose level. Writes a JSON
record and a PNG grid of region-of-interest crops.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks import crops, report, tuning
from benchmarks.record import header, write_json
from benchmarks.runners import Runner, SkipModel, open_runner
from runtime.tiling import TilePlan, enhance_frames
from trainer.data import DataConfig, HeldoutImage, build_heldout_set
from trainer.metrics import image_quality

DEFAULT_MODELS = ("models/medclear_student.fp32.onnx", "models/medclear_student.int8.onnx")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"student models (.onnx); default: {', '.join(DEFAULT_MODELS)} where present")
    parser.add_argument("--teacher", help="teacher checkpoint (.pt), run in PyTorch")
    parser.add_argument("--data-from", help="checkpoint whose config['data'] defines the held-out set "
                        "(default: the teacher's, else trainer.data.DataConfig defaults)")
    parser.add_argument("--sources", nargs="+", help="override DataConfig.sources")
    parser.add_argument("--modalities", nargs="+", help="override DataConfig.modalities")
    parser.add_argument("--dose-fractions", type=float, nargs="+", help="override DataConfig.dose_fractions")
    parser.add_argument("--max-side", type=int, help="override DataConfig.heldout_max_side")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N held-out images (smoke runs)")
    parser.add_argument("--no-tune", action="store_true", help="run baselines at trainer.baselines' defaults")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--crop", type=int, default=128, help="side of the region-of-interest crops")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"), help="JSON record")
    parser.add_argument("--grid", type=Path, default=Path("benchmarks/results/quality_crops.png"), help="PNG crop grid")
    return parser.parse_args(argv)


def data_config(args: argparse.Namespace) -> DataConfig:
    """The held-out set's configuration: from a checkpoint, then command-line overrides."""
    source = args.data_from or args.teacher
    values = {}
    if source and source.endswith(".pt"):
        from trainer.checkpoint import load_checkpoint

        values = dict(load_checkpoint(source).get("config", {}).get("data", {}))
    overrides = {"sources": args.sources, "modalities": args.modalities, "dose_fractions": args.dose_fractions,
                 "heldout_max_side": args.max_side}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DataConfig.from_dict(values) if values else DataConfig()


def enhance(runner: Runner, image: np.ndarray) -> np.ndarray:
    """One normalized 2-D image through a model, padded and tiled as the runtime does."""
    plan = TilePlan(size_multiple=runner.size_multiple)
    return enhance_frames(image[np.newaxis], lambda batch: runner.run(batch)[0], plan)[0]


def summarize(per_image: list[dict]) -> list[dict]:
    """Mean of every metric per (modality, degradation, method)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in per_image:
        groups[(row["modality"], row["degradation"], row["method"])].append(row["metrics"])
    summary = []
    for (modality, degradation, method), metrics in groups.items():
        keys = metrics[0].keys()
        summary.append({"modality": modality, "degradation": degradation, "method": method, "images": len(metrics),
                        **{k: float(np.mean([m[k] for m in metrics])) for k in keys}})
    return summary


def quality_report(summary: list[dict]) -> str:
    """Terminal table: one row per modality, degradation and method."""
    keys = sorted({k for row in summary for k in row if k.split("_")[0] in ("psnr", "ssim", "fsim")})
    return report.table(["modality", "degradation", "method", "n", *keys],
                        [[r["modality"], r["degradation"], r["method"], r["images"], *[r.get(k) for k in keys]]
                         for r in summary])


def main(argv: list[str] | None = None) -> int:
    """Run the quality benchmark; returns the exit status."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # pydicom/skimage warnings on packaged test files
    threads = args.threads or len(__import__("os").sched_getaffinity(0))
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    cfg = data_config(args)
    heldout: list[HeldoutImage] = build_heldout_set(cfg)[: args.max_images]
    if not heldout:
        log("quality: error: the held-out set is empty for this data configuration")
        return 2
    log(f"held-out set: {len(heldout)} images")
    tuned = {} if args.no_tune else tuning.tune_all(cfg, heldout, log)
    specs = list(args.models or [m for m in DEFAULT_MODELS if Path(m).is_file()])
    if args.teacher:
        specs.insert(0, args.teacher)
    runners, skipped = [], []
    for spec in specs:
        try:
            runners.append(open_runner(spec, threads))
        except SkipModel as reason:
            skipped.append({"model": spec, "reason": str(reason)})
            log(f"skip {spec}: {reason}")
    columns = ["clean", "input", *tuning.baselines.BASELINES, *[r.label for r in runners]]
    per_image, grid_rows, seen = [], [], set()
    for image in heldout:
        outputs = {"input": image.degraded}
        for name in tuning.baselines.BASELINES:
            best = tuned.get(f"{image.modality}/{image.degradation}", {}).get(name, {}).get("best")
            outputs[name] = tuning.run_baseline(name, image.degraded, best)
        for runner in runners:
            outputs[runner.label] = enhance(runner, image.degraded)
        for method, output in outputs.items():
            metrics = image_quality(output, image.clean, image.modality, image.spec)
            per_image.append({"image": image.name, "modality": image.modality, "degradation": image.degradation,
                              "method": method, "metrics": metrics})
        log(f"{image.name} ({image.degradation}): done")
        if (image.modality, image.degradation) not in seen:
            seen.add((image.modality, image.degradation))
            grid_rows.append({"name": image.name, "modality": image.modality, "degradation": image.degradation,
                              "spec": image.spec, "images": {"clean": image.clean, **outputs}})
    for runner in runners:
        runner.close()
    summary = summarize(per_image)
    print(quality_report(summary))
    models = {r.label: {"spec": r.spec, "kind": r.kind, "engine": r.engine, "precision": r.precision, **r.info}
              for r in runners}
    record = {**header("quality", {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}),
              "data_config": cfg.to_dict(), "heldout_images": len(heldout), "models": models, "skipped": skipped,
              "baseline_tuning": tuned or "not tuned (--no-tune): trainer.baselines defaults",
              "summary": summary, "per_image": per_image}
    write_json(record, args.out)
    crops.crop_grid(grid_rows, columns, args.grid, side=args.crop)
    log(f"wrote {args.out} and {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
