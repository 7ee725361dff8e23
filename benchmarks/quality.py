"""Image quality on the held-out split: ``python -m benchmarks.quality [MODEL ...] [options]``.

PSNR / SSIM / FSIM (trainer.metrics.image_quality: CT over the full HU range and in the
soft-tissue and lung windows) of the degraded input, the classical baselines (trainer.baselines,
their strength tuned on validation images, never test images: benchmarks/tuning.py), the teacher
(PyTorch checkpoint) and the student models (ONNX through the runtime's backend), per modality
and dose level. Every model runs through the runtime's inference path (``runtime.pipeline``)
on the held-out images in modality values (HU for CT) and normalizes them by its own contract;
metrics are taken in the test set's normalization. Writes a JSON record and a PNG grid of
region-of-interest crops.

``--dose-curve`` runs the dose-curve benchmark instead (benchmarks/dose_curve.py): every test
image (``--split validation``: every validation image) at every noise level, oracle and
estimated-sigma NLM, lung window, plot, targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import crops, report, tuning
from benchmarks.record import header, refuse_missing_config, refuse_unwritable, write_json
from benchmarks.runners import Runner, SkipModel, open_runner, refuse_missing_models
from compiler.quality import evaluation_units, heldout_values
from runtime.backends import select
from runtime.pipeline import enhance_values
from trainer.data import DataConfig, HeldoutImage, build_heldout_set
from trainer.metrics import image_quality

DEFAULT_MODELS = tuple(f"models/{name}" for name in select.DEFAULT_MODELS)
MR_MODELS = tuple(f"models/{name}" for name in select.MR_DENOISE_MODELS)  # the dose curve's MR students
# The dose curve's default data configuration: the splits that chose the shipped INT8 model
# (its validation split holds MR and radiograph phantoms, which tune the baselines for them).
SHIPPED_DATA_CONFIG = "trainer/configs/default_qat_detector_down0.json"
RESULTS = Path("benchmarks/results")
# The dose curve's references must be cleaner than the least noise it inserts (trainer/data/reference.py):
# 3 HU is under half the ~8 HU of dose 0.5 with the Hann kernel; 0.5 % is the shipped training screen.
REFERENCE_SCREEN = {"max_reference_noise": 0.005, "max_ct_reference_noise_hu": 3.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"student models (.onnx); default: {', '.join(DEFAULT_MODELS)} where present")
    parser.add_argument("--teacher", help="teacher checkpoint (.pt), run in PyTorch")
    parser.add_argument("--data-from", help="checkpoint (.pt) or trainer config (.json) whose 'data' defines the "
                        "test set (default: the teacher's; else DataConfig defaults, with --dose-curve "
                        f"{SHIPPED_DATA_CONFIG})")
    parser.add_argument("--sources", nargs="+", help="override DataConfig.sources")
    parser.add_argument("--modalities", nargs="+", help="override DataConfig.modalities")
    parser.add_argument("--dose-fractions", type=float, nargs="+", help="override DataConfig.dose_fractions")
    parser.add_argument("--kernels", nargs="+", help="override DataConfig.eval_ct_kernels")
    parser.add_argument("--mr-sigmas", type=float, nargs="+", help="override DataConfig.mr_noise_sigmas")
    parser.add_argument("--xray-photons", type=float, nargs="+", help="override DataConfig.xray_photons")
    parser.add_argument("--max-side", type=int, help="override DataConfig.heldout_max_side")
    parser.add_argument("--max-images", type=int, help="smoke runs: evaluate only the first N held-out images "
                        "(with --dose-curve: the first N images of each modality, at every level)")
    parser.add_argument("--no-tune", action="store_true", help="run baselines at trainer.baselines' defaults")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--crop", type=int, default=128, help="side of the region-of-interest crops")
    parser.add_argument("--out", type=Path, help="JSON record (default: benchmarks/results/quality.json, "
                        "with --dose-curve benchmarks/results/dose_curve.json)")
    parser.add_argument("--grid", type=Path, help="PNG crop grid (default: benchmarks/results/quality_crops.png, "
                        "with --dose-curve benchmarks/results/dose_curve_crops.png)")
    curve = parser.add_argument_group("dose curve (--dose-curve)")
    curve.add_argument("--dose-curve", action="store_true", help="every test image (--split validation: validation "
                       "image) at every noise level: input, NLM (true / estimated sigma), TV, teacher, students; "
                       "targets check")
    curve.add_argument("--split", choices=("test", "validation"), default="test",
                       help="which split to measure: test reports the shipped model's numbers; validation measures "
                       "the targets where recipes may be chosen (baselines tuned on the same validation images, "
                       "which favours them); outputs default to dose_curve_validation.*, and --markdown is refused")
    curve.add_argument("--plot", type=Path, help="PNG of PSNR against noise level (default: "
                       "benchmarks/results/dose_curve.png, with --split validation dose_curve_validation.png)")
    curve.add_argument("--markdown", type=Path, help="also write the tables into this Markdown file between "
                       "the <!-- dose-curve:begin/end --> markers (e.g. docs/BENCHMARKS.md)")
    curve.add_argument("--mr-models", nargs="*", metavar="MODEL",
                       help="student models (.onnx) that serve the MR images instead, matched to the students by "
                       "precision, as a run that names no model routes MR files (runtime/routing.py); default: "
                       f"{', '.join(MR_MODELS)} where present when no student model is named, else none")
    curve.add_argument("--fsim", action="store_true", help="also compute FSIM (slow)")
    curve.add_argument("--max-reference-noise", type=float, default=REFERENCE_SCREEN["max_reference_noise"],
                       help="MR/X-ray references noisier than this fraction of their range are binned or dropped, "
                       "as for the shipped model's training (0: off)")
    curve.add_argument("--max-ct-reference-noise", type=float, default=REFERENCE_SCREEN["max_ct_reference_noise_hu"],
                       help="real CT slices with more of their own soft-tissue noise (HU) than this are no "
                       "reference and are left out (0: off; docs/DATA.md)")
    args = parser.parse_args(argv)
    curve_only = [flag for flag, given in (("--markdown", args.markdown), ("--fsim", args.fsim),
                                           ("--mr-models", args.mr_models is not None), ("--plot", args.plot),
                                           ("--split", args.split != "test")) if given]
    if curve_only and not args.dose_curve:
        parser.error(f"{', '.join(curve_only)}: dose-curve options; add --dose-curve")
    if args.split == "validation" and args.markdown:
        parser.error("--markdown writes the test split's tables into the docs; not with --split validation")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1 (leave it out for every image)")
    refuse_missing_models(parser, [*args.models, *(args.mr_models or [])], args.teacher)
    refuse_missing_config(parser, args.data_from)
    name = ("dose_curve" if args.split == "test" else "dose_curve_validation") if args.dose_curve else "quality"
    args.out = args.out or RESULTS / f"{name}.json"
    args.grid = args.grid or RESULTS / f"{name}_crops.png"
    args.plot = args.plot or RESULTS / f"{name}.png"
    refuse_unwritable(parser, args.out, args.grid, args.markdown, args.plot if args.dose_curve else None)
    return args


def data_config(args: argparse.Namespace) -> DataConfig:
    """The test set's configuration: from a checkpoint or config file, then command-line overrides."""
    teacher = args.teacher if args.teacher and args.teacher.endswith(".pt") else None  # not arch:NAME
    source = args.data_from or (SHIPPED_DATA_CONFIG if args.dose_curve else teacher)
    values = {}
    if source and source.endswith(".pt"):
        from trainer.checkpoint import load_checkpoint

        values = dict(load_checkpoint(source).get("config", {}).get("data", {}))
    elif source and source.endswith(".json"):
        from trainer.config import read_config_file

        loaded = read_config_file(Path(source))  # a trainer config (its "extends" followed) or a bare data dict
        values = dict(loaded.get("data", loaded))
    overrides = {"sources": args.sources, "modalities": args.modalities, "dose_fractions": args.dose_fractions,
                 "eval_ct_kernels": args.kernels, "mr_noise_sigmas": args.mr_sigmas,
                 "xray_photons": args.xray_photons, "heldout_max_side": args.max_side}
    if getattr(args, "dose_curve", False):
        overrides.update(max_reference_noise=args.max_reference_noise,
                         max_ct_reference_noise_hu=args.max_ct_reference_noise)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DataConfig.from_dict(values) if values else DataConfig()


def open_runners(args: argparse.Namespace, threads: int, log: Callable[[str], None],
                 defaults: tuple[str, ...] = DEFAULT_MODELS) -> tuple[list[Runner], list[dict]]:
    """The teacher (first, if given) and the student models (``args.models``, else the
    ``defaults`` that exist); those this machine cannot run are skipped."""
    specs = list(args.models or [m for m in defaults if Path(m).is_file()])
    if args.teacher:
        specs.insert(0, args.teacher)
    runners, skipped = [], []
    for spec in specs:
        try:
            runners.append(open_runner(spec, threads))
        except SkipModel as reason:
            skipped.append({"model": spec, "reason": str(reason)})
            log(f"skip {spec}: {reason}")
    return runners, skipped


def model_records(runners: list[Runner]) -> dict:
    """What each model is, for the JSON record."""
    return {r.label: {"spec": r.spec, "kind": r.kind, "engine": r.engine, "precision": r.precision, **r.info}
            for r in runners}


def enhance(runner: Runner, image: HeldoutImage) -> np.ndarray:
    """A model's output on a held-out image, in the image's evaluation normalization.

    The degraded image goes back to modality values (HU for CT) and through the runtime's
    inference path, where the model normalizes it by its own contract, as the CLI would.
    """
    values = enhance_values(runner.backend, heldout_values(image).degraded, image.modality)
    return evaluation_units(values, image)


# Per-image fields copied into the summary (the same within a group) and averaged over it.
CARRIED, AVERAGED = ("level", "kernel", "noise_unit"), ("noise_sigma", "noise")


def summarize(per_image: list[dict]) -> list[dict]:
    """Mean of every metric per (modality, degradation, method)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in per_image:
        groups[(row["modality"], row["degradation"], row["method"])].append(row)
    summary = []
    for (modality, degradation, method), rows in groups.items():
        first, metrics = rows[0], [row["metrics"] for row in rows]
        summary.append({"modality": modality, "degradation": degradation, "method": method, "images": len(rows),
                        **{k: first[k] for k in CARRIED if k in first},
                        **{k: float(np.mean([row[k] for row in rows])) for k in AVERAGED if k in first},
                        **{k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}})
    return summary


def quality_report(summary: list[dict]) -> str:
    """Terminal table: one row per modality, degradation and method."""
    keys = sorted({k for row in summary for k in row if k.split("_")[0] in ("psnr", "ssim", "fsim")})
    return report.table(["modality", "degradation", "method", "n", *keys],
                        [[r["modality"], r["degradation"], r["method"], r["images"], *[r.get(k) for k in keys]]
                         for r in summary])


def main(argv: list[str] | None = None) -> int:
    """Run the quality benchmark (or, with --dose-curve, the dose curve); returns the exit status."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # pydicom/skimage warnings on packaged test files
    threads = args.threads or len(os.sched_getaffinity(0))
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    if args.dose_curve:
        from benchmarks import dose_curve

        return dose_curve.run(args, data_config(args), threads, log)
    cfg = data_config(args)
    heldout: list[HeldoutImage] = build_heldout_set(cfg)[: args.max_images]
    if not heldout:
        log("quality: error: the held-out set is empty for this data configuration")
        return 2
    log(f"held-out set: {len(heldout)} images")
    tuned = {} if args.no_tune else tuning.tune_all(cfg, heldout, log)
    runners, skipped = open_runners(args, threads, log)
    columns = ["clean", "input", *tuning.baselines.BASELINES, *[r.label for r in runners]]
    per_image, grid_rows, seen = [], [], set()
    for image in heldout:
        outputs = {"input": image.degraded}
        for name in tuning.baselines.BASELINES:
            best = next(iter(tuning.best_strengths(tuned, image, name).values()))
            outputs[name] = tuning.run_baseline(name, image.degraded, best)
        for runner in runners:
            outputs[runner.label] = enhance(runner, image)
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
    record = {**header("quality", settings(args)),
              "data_config": cfg.to_dict(), "heldout_images": len(heldout), "models": model_records(runners),
              "skipped": skipped, "baseline_tuning": tuned or "not tuned (--no-tune): trainer.baselines defaults",
              "summary": summary, "per_image": per_image}
    write_json(record, args.out)
    crops.crop_grid(grid_rows, columns, args.grid, side=args.crop)
    log(f"wrote {args.out} and {args.grid}")
    return 0


def settings(args: argparse.Namespace) -> dict:
    """The command line's settings, JSON-able."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


if __name__ == "__main__":
    sys.exit(main())
