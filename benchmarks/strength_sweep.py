"""How much of a model's correction helps: ``python -m benchmarks.strength_sweep MODEL.onnx``.

Every image-level of a split (default: **validation**; the test split only for reporting) in the
dose curve's data configuration or ``--data-from``'s (a trainer config or checkpoint), the
model run once through the runtime's inference path, then blended with its input at each
strength of ``--strengths`` as ``--strength`` would (``runtime.strength.apply_strength``) and
scored as the dose curve scores (CT: soft-tissue and lung windows). A best strength below 1 on
an image means the model removes more than noise there (fine structure, or a reference's own
noise); above 1, that it leaves noise in. Beside it, the fine-scale noise that
``runtime.noise.estimate_noise`` reads on the reference, the input and the model's output: an
output with far less than its reference has lost fine structure. Writes a JSON record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import quality
from benchmarks.dose_curve import estimated_sigma, noise_in_units
from benchmarks.record import file_record, header, refuse_missing_config, write_json
from benchmarks.runners import open_runner, refuse_missing_models
from runtime.strength import MAX_STRENGTH, apply_strength
from trainer.data import HeldoutImage, build_heldout_set
from trainer.metrics import image_quality

METRICS = ("psnr_window", "psnr_lung", "psnr")  # CT soft tissue, CT lung, MR/X-ray


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.strength_sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="a denoising model (.onnx), run as the CLI runs it")
    parser.add_argument("--split", choices=("validation", "test"), default="validation",
                        help="the split to sweep (choose on validation; test numbers are only reported)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2],
                        help=f"the blends to score, in 0..{MAX_STRENGTH:g}; must include 1 (the model's output)")
    parser.add_argument("--modalities", nargs="+", help="override the data configuration's modalities")
    parser.add_argument("--data-from", help="checkpoint (.pt) or trainer config (.json) whose 'data' defines the split; "
                        "None: the dose curve's (benchmarks.quality --dose-curve). E.g. "
                        "trainer/configs/default_qat_validation_heads.json for validation with head phantoms")
    parser.add_argument("--max-images", type=int, help="smoke runs: the first N image-levels only")
    parser.add_argument("--threads", type=int, help="inference threads (all cores when not given)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/strength_sweep.json"), help="JSON record")
    args = parser.parse_args(argv)
    if any(not 0 <= s <= MAX_STRENGTH for s in args.strengths) or 1.0 not in args.strengths:
        parser.error(f"--strengths must lie in 0..{MAX_STRENGTH:g} and include 1")
    refuse_missing_models(parser, [args.model])
    refuse_missing_config(parser, args.data_from)
    return args


def images_of(split: str, modalities: list[str] | None, data_from: str | None = None) -> list[HeldoutImage]:
    """The split's image-levels in the dose curve's data configuration (benchmarks.quality --dose-curve),
    or in ``data_from``'s (a checkpoint or trainer config, as the dose curve's ``--data-from``)."""
    curve = quality.parse_args(["--dose-curve", *(["--modalities", *modalities] if modalities else []),
                                *(["--data-from", data_from] if data_from else [])])
    return build_heldout_set(quality.data_config(curve), split)


def fine_noise(values: np.ndarray, image: HeldoutImage) -> float:
    """``runtime.noise.estimate_noise``'s reading of a normalized image: HU for CT, % otherwise."""
    return noise_in_units(image, estimated_sigma(replace(image, degraded=values)))[0]


def sweep(image: HeldoutImage, output: np.ndarray, strengths: list[float]) -> dict:
    """One image-level's scores at each strength, its best strength per metric and the gain there."""
    scores = {s: image_quality(apply_strength(image.degraded, output, s), image.clean, image.modality, image.spec,
                               with_fsim=False, with_ssim=False) for s in strengths}
    row = {"image": image.name, "modality": image.modality, "degradation": image.degradation,
           "fine_noise": {"reference": fine_noise(image.clean, image), "input": fine_noise(image.degraded, image),
                          "output": fine_noise(output, image)},
           "scores": {metric: {f"{s:g}": scores[s][metric] for s in strengths}
                      for metric in METRICS if metric in scores[1.0]}}
    row["best"] = {}
    for metric in row["scores"]:
        best = max(strengths, key=lambda s: scores[s][metric])
        row["best"][metric] = {"strength": float(best), "gain_db": scores[best][metric] - scores[1.0][metric]}
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    begin = time.perf_counter()
    images = images_of(args.split, args.modalities, args.data_from)[: args.max_images]
    runner = open_runner(args.model, args.threads or len(os.sched_getaffinity(0)))
    rows = []
    try:
        for image in images:
            row = sweep(image, quality.enhance(runner, image), args.strengths)
            rows.append(row)
            best = ", ".join(f"{m} {b['strength']:g} ({b['gain_db']:+.2f} dB)" for m, b in row["best"].items())
            print(f"{image.name} {image.degradation}: best strength {best}; fine noise reference/input/output "
                  + "/".join(f"{v:.2f}" for v in row["fine_noise"].values()), flush=True)
    finally:
        runner.close()
    settings = {"model": args.model, "model_file": file_record(args.model), "split": args.split,
                "strengths": args.strengths, "modalities": args.modalities, "data_from": args.data_from,
                "max_images": args.max_images,
                "threads": args.threads or len(os.sched_getaffinity(0))}
    write_json({**header("strength_sweep", settings), "rows": rows, "timing_s": time.perf_counter() - begin}, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
