"""The dose curve: ``python -m benchmarks.quality --dose-curve [MODEL ...] --teacher T.pt``.

Every image of the **test** split (``--split validation``: of the validation split, where recipes
may be chosen) at every evaluation level of the data configuration (CT dose
fractions x reconstruction kernels, MR noise sigmas, X-ray quanta per pixel), through the noisy
input, non-local means given the true noise sigma (the oracle) and given the sigma that
``runtime.noise.estimate_noise`` measures, TV given the true sigma (NLM's and TV's strength
tuned per modality and level on the **validation** split: benchmarks/tuning.py), the teacher
(PyTorch) and each student model (ONNX, through the runtime's backend). Scored with
``trainer.metrics.image_quality``: CT in the soft-tissue window, the lung window and the full
range; MR/X-ray on the normalized image clipped to [0, 1]. Writes a JSON record, Markdown
tables (optionally into docs/BENCHMARKS.md), a PSNR-against-noise plot and a crop grid per
level, and judges issue 11's quality targets (:func:`target_check`).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import crops, dose_report, tuning
from benchmarks.quality import MR_MODELS, enhance, model_records, open_runners, settings, summarize
from benchmarks.record import header, write_json
from benchmarks.runners import Runner
from compiler.quality import heldout_values
from runtime.noise import estimate_noise
from trainer.baselines import noise_sigma
from trainer.data import DataConfig, HeldoutImage, build_heldout_set
from trainer.metrics import image_quality

ORACLE_NLM, ESTIMATED_NLM, ORACLE_TV = "nlm_oracle", "nlm_estimated", "tv_oracle"
# method -> (trainer.baselines name, which sigma it is given)
CLASSICAL = {ORACLE_NLM: ("nlm", "true"), ESTIMATED_NLM: ("nlm", "estimated"), ORACLE_TV: ("tv", "true")}
METHODS = {
    "input": ("input", "the degraded image itself"),
    ORACLE_NLM: ("NLM (true σ)", "non-local means given the true noise sigma (oracle); h/sigma tuned on validation"),
    ESTIMATED_NLM: ("NLM (est. σ)", "non-local means given runtime.noise.estimate_noise's sigma; the same h/sigma"),
    ORACLE_TV: ("TV (true σ)", "TV (Chambolle) given the true noise sigma; weight/sigma tuned on validation"),
}
ROLE_TITLES = {"teacher": "teacher", "fp32": "FP32", "int8": "INT8"}
CELL_FIELDS = ("modality", "kernel", "level", "degradation", "noise", "noise_unit")  # what names a cell
NOISE_ESTIMATOR = ("runtime.noise.estimate_noise on the degraded image (CT: HU over soft tissue, divided by the "
                   "HU range of the normalization; others: on the normalized image); trainer.baselines.noise_sigma "
                   "where it measures nothing")


def estimated_sigma(image: HeldoutImage) -> float:
    """The noise sigma of ``image.degraded`` as the runtime estimates it, in normalized units."""
    if image.modality.upper() == "CT" and image.spec.kind == "hu_linear":
        pair = heldout_values(image)
        sigma = estimate_noise(pair.degraded, "CT") / pair.data_range
    else:  # the percentile map is affine and the estimator scale-free: measure the normalized image
        sigma = estimate_noise(image.degraded, image.modality)
    return float(sigma) if np.isfinite(sigma) else noise_sigma(image.degraded)


def noise_in_units(image: HeldoutImage, sigma: float | None = None) -> tuple[float, str]:
    """A noise sigma of ``image`` in normalized units (default: its true one) as reported: HU for
    CT, percent of the normalized range otherwise."""
    sigma = image.noise_sigma if sigma is None else sigma
    if image.modality.upper() == "CT" and image.spec.kind == "hu_linear":
        return sigma * (image.spec.hu_max - image.spec.hu_min), "HU"
    return 100.0 * sigma, "%"


def classical(name: str, image: HeldoutImage, sigma: float, strengths: dict[str, float | None],
              quality: Callable[[np.ndarray], dict]) -> tuple[np.ndarray, dict]:
    """A baseline's output at the primary metric's tuned strength, and its scores: each window's
    keys (e.g. ``*_lung``) come from the output at the strength tuned for that window."""
    outputs: dict[float | None, np.ndarray] = {}
    results: dict[float | None, dict] = {}
    scores: dict[str, float] = {}
    for metric, value in strengths.items():
        if value not in outputs:
            outputs[value] = tuning.run_baseline(name, image.degraded, value, sigma)
            results[value] = quality(outputs[value])
        suffix = metric.removeprefix("psnr")
        scores.update(results[value] if not scores else {k: v for k, v in results[value].items() if k.endswith(suffix)})
    return next(iter(outputs.values())), scores


Routes = dict[str, dict[str, Runner]]  # modality -> precision -> the student serving it instead


def open_routes(args: argparse.Namespace, runners: list[Runner], threads: int, log: Callable[[str], None]) -> Routes:
    """The MR students (``--mr-models``; by default the installed MR denoisers when no student
    is named), each standing in for the student of its precision on MR images, as a run that
    names no model sends MR files to the MR denoiser. Empty when no student would be replaced."""
    specs = args.mr_models if args.mr_models is not None else ([] if args.models else
                                                                 [m for m in MR_MODELS if Path(m).is_file()])
    students = Counter(r.precision for r in runners if r.kind != "pytorch")
    serving, skipped = open_runners(argparse.Namespace(models=specs, teacher=None), threads, log, defaults=())
    for entry in skipped:
        log(f"MR student skipped: {entry['reason']}")
    routes: Routes = {"MR": {}}
    for runner in serving:
        if students[runner.precision] == 1 and runner.precision not in routes["MR"]:
            routes["MR"][runner.precision] = runner
        else:  # none or several students of its precision: which column it stands in for is not clear
            log(f"{runner.label}: not used on MR ({students[runner.precision]} {runner.precision} students to "
                "stand in for; --mr-models needs exactly one of each precision it gives)")
            runner.close()
    return {modality: by_precision for modality, by_precision in routes.items() if by_precision}


def serving(runner: Runner, image: HeldoutImage, routes: Routes) -> Runner:
    """The student that enhances ``image`` in ``runner``'s column: its modality's own model of
    the same precision where routed, else ``runner`` (the teacher always serves itself)."""
    if runner.kind == "pytorch":
        return runner
    return routes.get(image.modality, {}).get(runner.precision, runner)


def evaluate(image: HeldoutImage, tuned: dict, runners: list[Runner], fsim: bool,
             routes: Routes | None = None) -> tuple[dict, list[dict]]:
    """Every method's output on one image, and one per-image record row per method (a student's
    column holds its modality's routed model's output where ``routes`` names one)."""
    def quality(output: np.ndarray) -> dict:
        return image_quality(output, image.clean, image.modality, image.spec, with_fsim=fsim)

    outputs, scores, sigmas = {"input": image.degraded}, {"input": quality(image.degraded)}, {}
    for method, (name, given) in CLASSICAL.items():
        known = tuning.true_sigma(image) if given == "true" else None  # None: estimate (also for real pairs)
        sigmas[method] = known if known is not None else estimated_sigma(image)
        strengths = tuning.best_strengths(tuned, image, name)
        outputs[method], scores[method] = classical(name, image, sigmas[method], strengths, quality)
    for runner in runners:
        outputs[runner.label] = enhance(serving(runner, image, routes or {}), image)
        scores[runner.label] = quality(outputs[runner.label])
    noise, unit = noise_in_units(image)
    base = {"image": image.name, "modality": image.modality, "degradation": image.degradation, "level": image.level,
            "kernel": image.kernel, "noise_sigma": image.noise_sigma, "noise": noise, "noise_unit": unit}
    rows = [{**base, "method": method, **({"sigma": sigmas[method]} if method in sigmas else {}), "metrics": result}
            for method, result in scores.items()]
    return outputs, rows


def roles(runners: list[Runner]) -> dict[str, str]:
    """Which model is the teacher (PyTorch), the FP32 and the INT8 student (first of each precision)."""
    found: dict[str, str] = {}
    for runner in runners:
        role = "teacher" if runner.kind == "pytorch" else runner.precision
        if role in ROLE_TITLES:
            found.setdefault(role, runner.label)
    return found


def method_table(runners: list[Runner], model_roles: dict[str, str], routes: Routes | None = None) -> list[dict]:
    """Every method in column order with its table title and what it is (a routed student's
    column names the model that served each routed modality)."""
    titles = {label: ROLE_TITLES[role] for role, label in model_roles.items()}

    def description(runner: Runner) -> str:
        routed = [f"{modality}: {by_precision[runner.precision].spec}" for modality, by_precision in (routes or {}).items()
                  if runner.kind != "pytorch" and runner.precision in by_precision]
        return f"{runner.kind}: {runner.spec}" + (f" ({'; '.join(routed)})" if routed else "")

    return ([{"key": key, "title": title, "description": text} for key, (title, text) in METHODS.items()]
            + [{"key": r.label, "title": titles.get(r.label, r.label), "description": description(r)}
               for r in runners])


def select(images: list[HeldoutImage], per_modality: int | None) -> list[HeldoutImage]:
    """The images of the first ``per_modality`` names of each modality, at every level (None: all)."""
    if not per_modality:
        return images
    names: dict[str, list[str]] = {}
    for image in images:
        chosen = names.setdefault(image.modality, [])
        if image.name not in chosen and len(chosen) < per_modality:
            chosen.append(image.name)
    return [image for image in images if image.name in names[image.modality]]


def crop_names(images: list[HeldoutImage]) -> set[str]:
    """One image per modality for the crop grid: the first real (packaged) one by name."""
    chosen: dict[str, str] = {}
    for image in sorted(images, key=lambda i: (not i.name.startswith("offline:"), i.name)):
        chosen.setdefault(image.modality, image.name)
    return set(chosen.values())


@dataclass(frozen=True)
class QualityTarget:
    """INT8 - reference >= ``limit_db`` in ``metric``, in every cell or on the mean over cells."""

    description: str
    modalities: tuple[str, ...]
    metric: str
    reference: str  # "oracle" (NLM given the true sigma) or "fp32"
    limit_db: float
    on_mean: bool = False


# Issue 11's targets on the test split; a cell is one modality, kernel and level.
QUALITY_TARGETS = (
    QualityTarget("INT8 >= oracle NLM, CT soft-tissue window W400/L40, every dose and kernel", ("CT",),
                  "psnr_window", "oracle", 0.0),
    QualityTarget("INT8 - oracle NLM, CT soft-tissue window, mean over doses and kernels", ("CT",),
                  "psnr_window", "oracle", 1.0, on_mean=True),
    QualityTarget("INT8 >= oracle NLM, CT lung window W1500/L-600, every dose and kernel", ("CT",),
                  "psnr_lung", "oracle", 0.0),
    QualityTarget("INT8 >= oracle NLM, MR, every noise level", ("MR",), "psnr", "oracle", 0.0),
    QualityTarget("INT8 >= oracle NLM, X-ray (CR/DX), every exposure", ("CR", "DX"), "psnr", "oracle", 0.0),
    QualityTarget("INT8 within 0.2 dB of FP32, CT soft-tissue window", ("CT",), "psnr_window", "fp32", -0.2),
    QualityTarget("INT8 within 0.2 dB of FP32, CT lung window", ("CT",), "psnr_lung", "fp32", -0.2),
    QualityTarget("INT8 within 0.2 dB of FP32, MR and X-ray", ("MR", "CR", "DX"), "psnr", "fp32", -0.2),
)


def target_check(summary: list[dict], model_roles: dict[str, str]) -> list[dict]:
    """Each target's cells (INT8 - reference, dB) and its standing: ``value_db`` is the worst
    cell (or the mean, for a target on the mean), ``status`` pass / miss / not measured. INT8
    better than FP32 by any amount counts as within 0.2 dB."""
    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for row in summary:
        cells.setdefault((row["modality"], row["degradation"]), {})[row["method"]] = row
    int8 = model_roles.get("int8")
    results = []
    for target in QUALITY_TARGETS:
        reference = ORACLE_NLM if target.reference == "oracle" else model_roles.get("fp32")
        judged = []
        for methods in cells.values():
            ours, theirs = methods.get(int8), methods.get(reference)
            if ours is None or theirs is None or ours["modality"] not in target.modalities or target.metric not in ours:
                continue
            margin = ours[target.metric] - theirs[target.metric]
            judged.append({**{k: ours.get(k) for k in CELL_FIELDS},
                           "int8_db": ours[target.metric], "reference_db": theirs[target.metric],
                           "margin_db": margin, "met": bool(margin >= target.limit_db)})
        judged.sort(key=lambda c: (c["modality"], c["kernel"] or "", c["noise"]))
        margins = [c["margin_db"] for c in judged]
        value = (float(np.mean(margins)) if target.on_mean else min(margins)) if judged else None
        status = "not measured" if value is None else ("pass" if value >= target.limit_db else "miss")
        results.append({**asdict(target), "int8": int8, "reference_method": reference,
                        "judged_on": "mean over cells" if target.on_mean else "every cell", "value_db": value,
                        "cells_met": sum(c["met"] for c in judged), "cells_total": len(judged), "status": status,
                        "cells": judged})
    return results


def run(args: argparse.Namespace, cfg: DataConfig, threads: int, log: Callable[[str], None]) -> int:
    """The dose-curve benchmark (``args`` from benchmarks.quality.parse_args); the exit status."""
    begin = time.perf_counter()
    split = args.split
    measured = select(build_heldout_set(cfg, split), args.max_images)
    if not measured:
        log(f"quality --dose-curve: error: the {split} split is empty for this data configuration")
        return 2
    log(f"{split} split: {len(measured)} image-levels of {len({i.name for i in measured})} images")
    tuned = {} if args.no_tune else tuning.tune_all(cfg, measured, log, names=("nlm", "tv"), oracle=True)
    tuned_s = time.perf_counter() - begin
    runners, skipped = open_runners(args, threads, log)
    routes = open_routes(args, runners, threads, log)
    model_roles = roles(runners)
    methods = method_table(runners, model_roles, routes)
    shown, per_image, grid_rows = crop_names(measured), [], []
    for image in measured:
        outputs, rows = evaluate(image, tuned, runners, args.fsim, routes)
        per_image += rows
        if image.name in shown:
            images = crops.cropped({"clean": image.clean, **outputs}, image.modality, image.spec, args.crop)
            grid_rows.append({"name": image.name, "modality": image.modality, "spec": image.spec,
                              "degradation": f"{image.degradation}\n{dose_report.noise_text(rows[0])}",
                              "order": dose_report.cell_order(rows[0]),
                              "images": {"clean": images.pop("clean"),
                                         **{m["title"]: images[m["key"]] for m in methods}}})
        log(f"{image.name} ({image.degradation}): done")
    routed = [runner for by_precision in routes.values() for runner in by_precision.values()]
    for runner in runners + routed:
        runner.close()
    summary = summarize(per_image)
    record = {**header("dose_curve", settings(args)), "split": split, "data_config": cfg.to_dict(),
              f"{split}_images": sorted({i.name for i in measured}), "methods": methods, "roles": model_roles,
              "models": model_records(runners), "skipped": skipped, "noise_estimator": NOISE_ESTIMATOR,
              "modality_models": {modality: {precision: model_records([runner])[runner.label]
                                             for precision, runner in by_precision.items()}
                                  for modality, by_precision in routes.items()},
              "baseline_tuning": tuned or "not tuned (--no-tune): trainer.baselines defaults",
              "summary": summary, "targets": target_check(summary, model_roles), "per_image": per_image,
              "timing_s": {f"{split}_set_and_tuning": tuned_s, "total": time.perf_counter() - begin},
              "outputs": {"json": str(args.out), "plot": str(args.plot), "grid": str(args.grid),
                          "markdown": str(args.markdown) if args.markdown else None}}
    text = dose_report.markdown(record)
    print(text)
    write_json(record, args.out)
    dose_report.plot(record, args.plot)
    grid_rows.sort(key=lambda row: row["order"])
    crops.crop_grid(grid_rows, ["clean", *[m["title"] for m in methods]], args.grid, side=args.crop,
                    title=f"{split} crops at every level (CT: soft-tissue window W400/L40)", dpi=64)
    written = [args.out, args.plot, args.grid]
    if args.markdown:
        written.append(dose_report.write_section(args.markdown, text))
    log(f"wrote {', '.join(map(str, written))} in {time.perf_counter() - begin:.0f} s")
    return 0
