"""x2 super-resolution quality on the test split: ``python -m benchmarks.super_resolution``.

Every test image of the SR data configuration (MR: k-space truncation to half the matrix, of
the DCT-II (default) or, with ``--mr-kspace dft``, the DFT; CT and X-ray: blur + 2x2 area averaging;
trainer/data/super_resolution.py) is upscaled by the classical methods (nearest, bicubic,
Lanczos-3, zero-filled k-space of the DFT and of the DCT), the teacher (PyTorch checkpoint) and the
student models (ONNX through the runtime's inference path, as ``runtime.enhance`` runs them),
and scored against the high-resolution original: PSNR / SSIM (FSIM with ``--fsim``) and the
texture ratio, a perceptual-realism proxy (trainer.metrics.texture_ratio: fine-texture power
against the original's; the adversarial model is meant to move it towards 1). CT is scored in
the soft-tissue and lung windows. Writes a JSON record, a PNG of crops and, with
``--markdown``, the tables into docs/BENCHMARKS.md between ``<!-- super-resolution:begin/end -->``
(``python -m benchmarks.markdown RECORD --into DOC`` does the same from the record).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import crops, quality
from benchmarks.markdown import md_table, section_name, write_marked_section
from benchmarks.record import header, refuse_missing_config, refuse_unwritable, write_json
from benchmarks.runners import Runner, refuse_missing_models
from runtime.pipeline import ModalityError
from trainer.baselines import UPSCALERS, upscale
from trainer.data import build_heldout_set
from trainer.metrics import image_quality

DEFAULT_MODELS = ("models/medclear_sr2.fp32.onnx", "models/medclear_sr2.int8.onnx",
                  "models/medclear_sr2_mr.fp32.onnx", "models/medclear_sr2_mr.int8.onnx")
DATA_CONFIG = "trainer/configs/sr2_teacher.json"
RESULTS = Path("benchmarks/results")
# Issue 15's targets, on the primary metric of each modality (CT: soft-tissue window).
TARGETS = {"int8_over_bicubic_db": 1.5, "int8_over_lanczos_db": 0.5, "teacher_minus_int8_db": 0.3,
           "fp32_minus_int8_db": 0.2, "teacher_over_student_flops": 10.0}
# "CT scans": the CT test images that are packaged scans, scored apart because the CT mean also
# holds synthetic phantoms, on which a model can gain far more than on a real slice.
REAL_CT = "CT scans"
TARGET_MODALITIES = ("CT", REAL_CT, "MR")
INPUT_SIDE = 512  # FLOPs and latency are quoted per 512x512 input (1024x1024 output)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.super_resolution", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"student models (.onnx, or .pt checkpoints such as the adversarial "
                        f"student); default: {', '.join(DEFAULT_MODELS)} where present")
    parser.add_argument("--teacher", help="x2 teacher checkpoint (.pt), run in PyTorch")
    parser.add_argument("--data-from", default=DATA_CONFIG, help="trainer config (.json) or checkpoint (.pt) whose "
                        "'data' defines the test set")
    parser.add_argument("--modalities", nargs="+", help="override DataConfig.modalities")
    parser.add_argument("--mr-kspace", choices=("dft", "dct"), default="dct", help="how MR test images are halved in "
                        "k-space (overrides the data configuration's sr_mr_kspace): 'dct' truncates the DCT-II, the "
                        "image mirrored about its edges (no wrap-around ringing; the published tables since the "
                        "twenty-first session); 'dft' the image's DFT, as before (docs/DATA.md)")
    parser.add_argument("--max-images", type=int, help="smoke runs: only the first N test images")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--fsim", action="store_true", help="also compute FSIM (slow)")
    parser.add_argument("--crop", type=int, default=96, help="side of the high-resolution crops")
    parser.add_argument("--out", type=Path, default=RESULTS / "super_resolution.json", help="JSON record")
    parser.add_argument("--grid", type=Path, default=RESULTS / "super_resolution_crops.png", help="PNG crop grid")
    parser.add_argument("--markdown", type=Path, help="also write the tables into this Markdown file between "
                        "the <!-- super-resolution:begin/end --> markers (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    refuse_missing_models(parser, args.models, args.teacher)
    refuse_missing_config(parser, args.data_from)
    refuse_unwritable(parser, args.out, args.grid, args.markdown)
    return args


def data_args(args: argparse.Namespace) -> argparse.Namespace:
    """The quality benchmark's data options, for :func:`benchmarks.quality.data_config`."""
    return argparse.Namespace(teacher=None, data_from=args.data_from, dose_curve=False, sources=None,
                              modalities=args.modalities, dose_fractions=None, kernels=None, mr_sigmas=None,
                              xray_photons=None, max_side=None)


def primary_metric(modality: str) -> str:
    """The PSNR a target is judged on: CT in the soft-tissue window, others on the image."""
    return "psnr_window" if is_ct(modality) else "psnr"


def is_ct(group: str) -> bool:
    """Whether a summary group (a modality, or REAL_CT) is CT."""
    return group in ("CT", REAL_CT)


def with_real_ct(per_image: list[dict]) -> list[dict]:
    """``per_image`` plus a REAL_CT copy of each CT row of a packaged scan (not a phantom)."""
    return per_image + [{**row, "modality": REAL_CT} for row in per_image
                        if row["modality"] == "CT" and row["image"].startswith("offline:")]


def open_models(args: argparse.Namespace, threads: int, log: Callable[[str], None]) -> tuple[list[Runner], list[dict]]:
    """The teacher (first, if given) and the models; those this machine cannot run are skipped,
    a model that is not x2 is an error."""
    runners, skipped = quality.open_runners(args, threads, log, DEFAULT_MODELS)
    for runner in runners:
        if runner.backend.contract.scale != 2:
            for other in runners:
                other.close()
            raise SystemExit(f"super_resolution: error: {runner.spec} is not a x2 model "
                             f"(scale {runner.backend.contract.scale})")
    return runners, skipped


def roles(runners: list[Runner], teacher: str | None) -> dict[str, str]:
    """Which runner is the teacher, the FP32 and the INT8 student (ONNX), by label; and
    ``"int8:MR"``-style entries (``"int8:*"`` for a contract that lists every modality) for the
    first student of each precision whose contract covers a modality, so that a modality with a
    model of its own (an MR x2 model beside the CT one) is judged on it, whatever the order."""
    found: dict[str, str] = {}
    for runner in runners:
        if teacher is not None and runner.spec == teacher:
            found["teacher"] = runner.label
        elif runner.kind != "pytorch":
            found.setdefault(runner.precision, runner.label)
            for modality in runner.backend.contract.modalities:
                found.setdefault(f"{runner.precision}:{modality}", runner.label)
    return found


def role_for(model_roles: dict[str, str], role: str, modality: str) -> str | None:
    """The label that plays ``role`` for a summary group: the first model whose contract names
    its modality, else one that covers every modality, else the first of that role."""
    covered_as = "CT" if modality == REAL_CT else modality
    for key in (f"{role}:{covered_as}", f"{role}:*", role):
        if key in model_roles:
            return model_roles[key]
    return None


def target_check(summary: list[dict], model_roles: dict[str, str], flops: dict[str, float | None],
                 not_covered: dict[str, list[str]] | None = None) -> list[dict]:
    """Issue 15's targets per modality (missing models: not checked, said so; a model whose
    contract does not cover a modality: that modality's targets say so in ``note``)."""
    rows = []
    means = {(row["modality"], row["method"]): row for row in summary}

    def value(modality: str, method: str | None) -> float | None:
        row = means.get((modality, method)) if method else None
        return row.get(primary_metric(modality)) if row else None

    for modality in TARGET_MODALITIES:
        labels = {k: role_for(model_roles, k, modality) for k in ("int8", "fp32", "teacher")}
        int8, fp32, teacher = (value(modality, labels[k]) for k in ("int8", "fp32", "teacher"))
        checks = [("int8_over_bicubic_db", int8, value(modality, "bicubic"), 1),
                  ("int8_over_lanczos_db", int8, value(modality, "lanczos"), 1),
                  ("teacher_minus_int8_db", teacher, int8, -1),
                  ("fp32_minus_int8_db", fp32, int8, -1)]
        for name, ours, theirs, sign in checks:
            measured = None if ours is None or theirs is None else ours - theirs
            passed = None if measured is None else (measured >= TARGETS[name] if sign > 0 else measured <= TARGETS[name])
            row = {"target": name, "modality": modality, "limit": TARGETS[name], "measured_db": measured, "pass": passed}
            covered_as = "CT" if modality == REAL_CT else modality
            refused = [labels[k] for k in ("int8", "fp32") if covered_as in (not_covered or {}).get(labels[k], [])]
            if refused:
                row["note"] = f"{', '.join(refused)} not released for {modality}"
            rows.append(row)
    teacher_flops = flops.get(model_roles.get("teacher", ""))
    student_flops = flops.get(role_for(model_roles, "int8", "CT") or "")
    ratio = teacher_flops / student_flops if teacher_flops and student_flops else None
    rows.append({"target": "teacher_over_student_flops", "modality": "*", "limit": TARGETS["teacher_over_student_flops"],
                 "measured": ratio, "pass": None if ratio is None else ratio >= TARGETS["teacher_over_student_flops"]})
    return rows


def markdown(record: dict) -> str:
    """The tables of docs/BENCHMARKS.md's SR section, generated from the record."""
    machine = record.get("machine", {})
    lines = [f"Test split, {record['test_images']} images ({record['created_utc'][:10]}, {machine.get('cpu', 'CPU')}); "
             "`python -m benchmarks.super_resolution` (record: models/sr2_quality.json). "
             "CT in the soft-tissue window W400/L40 (lung window beside it); texture = fine-texture power "
             "over the original's (1 = as much, < 1 smoother).", ""]
    for modality in sorted({row["modality"] for row in record["summary"]}):
        rows = [row for row in record["summary"] if row["modality"] == modality]
        keys = ["psnr_window", "psnr_lung", "ssim_window", "texture_window"] if is_ct(modality) else ["psnr", "ssim", "texture"]
        keys += [k for k in ("fsim_window", "fsim") if k in rows[0] and (k.endswith("window") == is_ct(modality))]
        lines += [f"**{modality}** ({rows[0]['degradation']}, {rows[0]['images']} images)", "",
                  md_table(["method", *keys], [[row["method"], *[row.get(k) for k in keys]] for row in rows]), ""]
    lines += ["Targets (issue 15):", "",
              md_table(["target", "modality", "limit", "measured", "pass"],
                       [[t["target"], t["modality"], t["limit"], t.get("measured_db", t.get("measured")),
                         t.get("note") or {True: "yes", False: "**no**", None: "not measured"}[t["pass"]]]
                        for t in record["targets"]]),
              "", "FLOPs per 512x512 input: " + ", ".join(f"{k} {v / 1e9:.1f} G" for k, v in record["flops"].items() if v)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # pydicom/skimage warnings on packaged test files
    threads = args.threads or len(os.sched_getaffinity(0))
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    cfg = quality.data_config(data_args(args))
    cfg = dataclasses.replace(cfg, sr_mr_kspace=args.mr_kspace)
    if cfg.task != "sr2":
        log(f"super_resolution: error: {args.data_from}: its data task is {cfg.task!r}, not 'sr2'")
        return 2
    images = build_heldout_set(cfg, "test")[: args.max_images]
    if not images:
        log("super_resolution: error: the test split is empty for this data configuration")
        return 2
    runners, skipped = open_models(args, threads, log)
    model_roles = roles(runners, args.teacher)
    per_image, grid_rows, seen = [], [], set()
    not_covered: dict[str, list[str]] = {}  # model -> modalities its contract refuses (not scored there)
    for image in images:
        outputs = {method: upscale(image.degraded, method) for method in UPSCALERS}
        for runner in runners:
            try:
                outputs[runner.label] = quality.enhance(runner, image)
            except ModalityError:
                refused = not_covered.setdefault(runner.label, [])
                if image.modality not in refused:
                    refused.append(image.modality)
                    log(f"{runner.label}: does not cover {image.modality}; not scored on those images")
        for method, output in outputs.items():
            metrics = image_quality(output, image.clean, image.modality, image.spec, with_fsim=args.fsim,
                                    with_texture=True)
            per_image.append({"image": image.name, "modality": image.modality, "degradation": image.degradation,
                              "method": method, "metrics": metrics})
        log(f"{image.name} ({image.degradation}): done")
        if image.modality not in seen:
            seen.add(image.modality)
            grid_rows.append({"name": image.name, "modality": image.modality, "degradation": image.degradation,
                              "spec": image.spec, "images": {"clean": image.clean, **outputs}})
    flops = {runner.label: runner.flops(runner.input_shape(1, INPUT_SIDE, INPUT_SIDE)) for runner in runners}
    for runner in runners:
        runner.close()
    summary = quality.summarize(with_real_ct(per_image))
    print(quality.quality_report(summary))
    record = {**header("super_resolution", quality.settings(args)), "data_config": cfg.to_dict(),
              "test_images": len(images), "models": quality.model_records(runners), "roles": model_roles,
              "skipped": skipped, "not_covered": not_covered, "flops": flops, "summary": summary,
              "targets": target_check(summary, model_roles, flops, not_covered), "per_image": per_image}
    write_json(record, args.out)
    columns = ["clean", *UPSCALERS, *[runner.label for runner in runners]]
    crops.crop_grid(grid_rows, columns, args.grid, side=args.crop,
                    title="x2 super-resolution, test crops (CT: soft-tissue window W400/L40)")
    written = [args.out, args.grid]
    if args.markdown:
        written.append(write_marked_section(args.markdown, markdown(record), section_name(record)))
    log(f"wrote {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
