"""What a noisy reference does to a score: ``python -m benchmarks.noisy_reference [MODEL.onnx]``.

The shipped gate's sample (samples/ct_quarter_dose.dcm: explicit_VR-UN at simulated quarter dose)
can only be scored against its full-dose original, a real scan whose own noise is also in the
input. A PSNR against such a reference rewards an output for keeping the part of the input's
noise that the reference shares, so a method that removes all noise can score below one that
keeps some. This benchmark builds the sample's situation where the truth is known: noiseless CT
phantoms (a stream of their own: no training, validation or test phantom), a simulated full-dose
scan of each with ``--own-noise`` HU of noise (soft-tissue standard deviation) as the reference,
and the same scan at ``--dose`` as the input (``LowDoseCT.scan_pair``: nested noise, ramp kernel,
as the sample was made). The input is then a scan at ``--dose`` of the truth, so scoring against
the truth is the dose curve's case (a noiseless reference) on the same input. Each method (the
noisy input, the model at each ``--strengths`` blend, non-local means given the noise level that
separates the input from that reference, at the best of the gate's h for that image) is scored in
the CT soft-tissue window against the noisy reference and against the truth. The real sample is
scored too, against its original (no truth exists; its implied own noise is the added noise /
sqrt(1/dose - 1)). Writes a JSON record and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from benchmarks.record import file_record, header, write_json
from benchmarks.runners import Runner, open_runner, refuse_missing_models
from runtime.image_contract import modality_image
from runtime.normalization import NormalizationSpec, denormalize, fit_normalization, normalize
from runtime.pipeline import enhance_values
from runtime.strength import MAX_STRENGTH, apply_strength
from trainer.baselines import NLM_ORACLE_H_PER_SIGMA, nlm
from trainer.data.degrade import LowDoseCT, soft_tissue_mask
from trainer.data.offline import offline_dicom_files
from trainer.data.phantoms import phantom_pixel_mm, random_head_phantom, random_phantom
from trainer.metrics import image_quality

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "ct_quarter_dose.dcm"
SAMPLE_SOURCE = "explicit_VR-UN.dcm"  # the sample's full-dose original (test split)
SAMPLE_DOSE = 0.25
CT_SPEC = NormalizationSpec()  # hu_linear over the full HU range; the window is image_quality's
SEED = 53  # this benchmark's phantom stream: [SEED, kind, index]
KIND_STREAM = {"body": 1, "head": 2}
CALIBRATION_PHOTONS = 7e5  # the dose model's default I0: its noise is measured, then I0 scaled to the level asked
VIEWS = 180


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; usage errors (exit 2) for settings that cannot work."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noisy_reference", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", nargs="?", default="models/medclear_student.int8.onnx",
                        help="a denoising model (.onnx), run as the CLI runs it")
    parser.add_argument("--own-noise", type=float, nargs="+", default=[2.5, 5.0, 10.0, 20.0], metavar="HU",
                        help="the reference's own noise, soft-tissue standard deviation in HU (the sample's ~20)")
    parser.add_argument("--dose", type=float, default=0.25,
                        help="the phantoms' input dose, a fraction of their reference's (the sample's: 0.25)")
    parser.add_argument("--body", type=int, default=2, help="random body phantoms")
    parser.add_argument("--head", type=int, default=2, help="random head phantoms")
    parser.add_argument("--size", type=int, default=512, help="phantom side in pixels")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.7, 0.8, 0.9, 1.0],
                        help="model blends to score (as --strength); must include 1")
    parser.add_argument("--no-sample", action="store_true", help="leave the real sample out")
    parser.add_argument("--threads", type=int, help="inference threads (all cores when not given)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/noisy_reference.json"), help="JSON record")
    args = parser.parse_args(argv)
    if 1.0 not in args.strengths:
        parser.error("--strengths must include 1 (the model's output)")
    if not 0 < args.dose < 1:
        parser.error(f"--dose must lie in (0, 1), got {args.dose:g}")
    if any(not 0 < hu < 100 for hu in args.own_noise):
        parser.error("--own-noise values must lie in (0, 100) HU")
    if args.body < 0 or args.head < 0 or args.body + args.head == 0:
        parser.error("--body and --head must be >= 0, and at least one phantom is needed")
    if args.size < 64:
        parser.error(f"--size must be at least 64 pixels, got {args.size}")
    if any(not 0 <= s <= MAX_STRENGTH for s in args.strengths):
        parser.error(f"--strengths must lie in 0..{MAX_STRENGTH:g}")
    refuse_missing_models(parser, [args.model])
    return args


def phantom(kind: str, index: int, size: int) -> np.ndarray:
    """A noiseless phantom (HU) of this benchmark's own seed stream."""
    rng = np.random.default_rng([SEED, KIND_STREAM[kind], index])
    return random_phantom(size, rng) if kind == "body" else random_head_phantom(size, rng)


def calibration_scan(truth: np.ndarray) -> LowDoseCT:
    """The phantom's scan at CALIBRATION_PHOTONS, whose measured noise sets each level's I0 (one per phantom)."""
    return LowDoseCT(truth, phantom_pixel_mm(truth.shape[0]), VIEWS, CALIBRATION_PHOTONS)


def scans(probe: LowDoseCT, tissue: np.ndarray, own_noise_hu: float, dose: float,
          seed: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(reference, input)`` of the phantom ``probe`` scans (:func:`calibration_scan`): a full-dose scan
    with ``own_noise_hu`` of noise in ``tissue`` and the scan at ``dose`` of it, noise nested as in a real pair."""
    measured = float(np.std(probe.noise(1.0, np.random.default_rng([*seed, 0]))[tissue]))
    photons = CALIBRATION_PHOTONS * (measured / own_noise_hu) ** 2  # noise sigma ~ 1/sqrt(I0)
    return probe.with_photons(photons).scan_pair(dose, np.random.default_rng(seed))


def window_psnr(values: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) in the CT soft-tissue window W400/L40, as the gate and the dose curve score CT."""
    state = fit_normalization(reference, CT_SPEC)
    return image_quality(normalize(values, state), normalize(reference, state), "CT", CT_SPEC,
                         with_fsim=False, with_ssim=False)["psnr_window"]


def oracle_nlm(noisy: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Non-local means at each of the gate's h (HU), told the standard deviation of input - ``reference``
    over the image as its noise level, as the gate tells it."""
    state = fit_normalization(reference, CT_SPEC)
    noisy_units = normalize(noisy, state)
    sigma = float(np.std(noisy_units - normalize(reference, state)))
    return {f"nlm@{h:g}": denormalize(nlm(noisy_units, sigma, h_per_sigma=h), state).astype(np.float32)
            for h in NLM_ORACLE_H_PER_SIGMA}


def scored(runner: Runner, noisy: np.ndarray, references: dict[str, np.ndarray], strengths: list[float]) -> dict:
    """PSNR against each reference of the input, the model at each strength and oracle NLM (told
    that reference's noise level) at each h, with the best NLM and the model's margin over it."""
    model = enhance_values(runner.backend, noisy, "CT")
    blends = {f"model@{s:g}": apply_strength(noisy, model, s) for s in strengths}
    table, summary = {}, {}
    for key, reference in references.items():
        found = {"input": noisy, **blends, **oracle_nlm(noisy, reference)}
        table[key] = scores = {name: window_psnr(image, reference) for name, image in found.items()}
        best_nlm = max((v, n) for n, v in scores.items() if n.startswith("nlm@"))
        best_model = max((v, n) for n, v in scores.items() if n.startswith("model@"))
        summary[key] = {"model": scores["model@1"], "best_nlm": best_nlm[0], "best_nlm_h": _setting(best_nlm[1]),
                        "model_minus_nlm": scores["model@1"] - best_nlm[0],
                        "best_model_strength": _setting(best_model[1]), "best_model": best_model[0]}
    return {"psnr_window": table, "summary": summary}


def _setting(method: str) -> float:
    """The number in a method's name: ``model@0.8`` -> 0.8 (its strength), ``nlm@1.3`` -> 1.3 (its h / sigma)."""
    return float(method.split("@")[1])


def phantom_rows(runner: Runner, args: argparse.Namespace, log: Callable[[str], None]) -> list[dict]:
    """Every phantom at every own-noise level, scored against its noisy reference and its truth."""
    rows = []
    for kind, count in (("body", args.body), ("head", args.head)):
        for index in range(count):
            truth = phantom(kind, index, args.size)
            probe, tissue = calibration_scan(truth), soft_tissue_mask(truth)
            for own in args.own_noise:
                seed = [SEED, KIND_STREAM[kind], index, round(own * 10)]
                reference, noisy = scans(probe, tissue, own, args.dose, seed)
                row = {"image": f"{kind}-{index}", "own_noise_target_hu": own,
                       "own_noise_hu": float(np.std((reference - truth)[tissue])),
                       "added_noise_hu": float(np.std((noisy - reference)[tissue])),
                       "input_noise_hu": float(np.std((noisy - truth)[tissue])),
                       **scored(runner, noisy, {"vs_reference": reference, "vs_truth": truth}, args.strengths)}
                rows.append(row)
                log(row_line(row))
    return rows


def sample_row(runner: Runner, strengths: list[float]) -> dict:
    """The shipped sample against its full-dose original (the gate's case; no truth exists)."""
    source = next((path for path in offline_dicom_files() if path.name == SAMPLE_SOURCE), None)
    if source is None or not SAMPLE.is_file():
        raise SystemExit(f"error: the sample needs {SAMPLE} and pydicom-data's {SAMPLE_SOURCE}; "
                         "leave it out with --no-sample")
    reference = modality_image(pydicom.dcmread(source))[0][0].astype(np.float32)
    noisy = modality_image(pydicom.dcmread(SAMPLE))[0][0].astype(np.float32)
    added = float(np.std((noisy - reference)[soft_tissue_mask(reference)]))
    return {"image": "sample", "own_noise_target_hu": None, "own_noise_hu": added / np.sqrt(1 / SAMPLE_DOSE - 1),
            "own_noise_implied": True, "added_noise_hu": added,
            **scored(runner, noisy, {"vs_reference": reference}, strengths)}


def row_line(row: dict) -> str:
    """One row as a progress line."""
    parts = [f"{key} model {s['model']:.2f} - NLM {s['best_nlm']:.2f} = {s['model_minus_nlm']:+.2f} dB "
             f"(model best at strength {s['best_model_strength']:g})" for key, s in row["summary"].items()]
    own = f"own {row['own_noise_hu']:.1f} HU" + (" implied" if row.get("own_noise_implied") else "")
    return f"{row['image']} ({own}, added {row['added_noise_hu']:.1f} HU): " + "; ".join(parts)


def markdown(rows: list[dict]) -> str:
    """One line per image and own-noise level: the model's margin over oracle NLM both ways."""
    lines = ["| image | reference's own noise (HU) | input's noise (HU) | model - NLM vs noisy reference (dB) | "
             "model - NLM vs truth (dB) | best strength vs noisy reference / vs truth |", "|---|---|---|---|---|---|"]
    for row in rows:
        own = f"{row['own_noise_hu']:.1f}" + (" (implied)" if row.get("own_noise_implied") else "")
        total = row.get("input_noise_hu")
        summary = row["summary"]
        truth = summary.get("vs_truth")
        strengths = " / ".join(f"{s['best_model_strength']:g}" for s in summary.values())
        lines.append(f"| {row['image']} | {own} | {'-' if total is None else format(total, '.1f')} | "
                     f"{summary['vs_reference']['model_minus_nlm']:+.2f} | "
                     f"{'-' if truth is None else format(truth['model_minus_nlm'], '+.2f')} | {strengths} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score every phantom and the sample, write the JSON record and print the markdown table."""
    args = parse_args(argv)
    begin = time.perf_counter()
    threads = args.threads or len(os.sched_getaffinity(0))
    runner = open_runner(args.model, threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        rows = phantom_rows(runner, args, log)
        if not args.no_sample:
            rows.append(sample_row(runner, args.strengths))
            log(row_line(rows[-1]))
    finally:
        runner.close()
    settings = {"model": args.model, "model_file": file_record(args.model), "own_noise_hu": args.own_noise,
                "dose": args.dose, "body": args.body, "head": args.head, "size": args.size,
                "strengths": args.strengths, "nlm_h_per_sigma": list(NLM_ORACLE_H_PER_SIGMA), "sample": not args.no_sample,
                "threads": threads, "views": VIEWS, "seed": SEED}
    write_json({**header("noisy_reference", settings), "rows": rows, "timing_s": time.perf_counter() - begin}, args.out)
    print(markdown(rows))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
