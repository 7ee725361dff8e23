"""python -m runtime.enhance: enhance DICOM images with a medclear model, writing derived DICOM.

One file at a time: classify and bound it before decoding, prepare it through the image
contract, estimate its noise, run the model (padded, batched, tiled), blend at the chosen
strength, restore the source's encoding and write the result atomically. Every enhanced file
gets one line (noise and strength), every problem one line naming the file and the cause; the
batch goes on.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from runtime.backends import Backend, BackendError, select_backend
from runtime.backends.select import BACKENDS, DEFAULT_MODELS, MODEL_ENV
from runtime.derived import Derivation, derive
from runtime.dicom_io import DEFAULT_MAX_PIXELS, InputError, NotAnImage, check_image, decode, read_dataset
from runtime.engine_sidecar import sha256_file
from runtime.image_contract import PreparedImage, modality_values, prepare, restore
from runtime.model_contract import ModelContract
from runtime.inputs import Job, discover
from runtime.noise import NoiseLevel, prepared_noise
from runtime.outputs import display_window, montage, side_by_side, to_display, write_dicom, write_npy, write_png
from runtime.pixels import UnsupportedImageError
from runtime.strength import DEFAULT_STRENGTH, MAX_STRENGTH, apply_strength, check_strength
from runtime.tiling import InferFn, TilePlan, enhance_frames

SOFTWARE_VERSION = "medclear 0.1.0"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
Enhance (denoise) DICOM images with a medclear model and write the results as new files.

INPUTS are DICOM files, folders (searched recursively) or DICOMDIR files (their referenced
images are processed). Single-frame and enhanced multi-frame greyscale images (MONOCHROME1/2)
are enhanced, in any transfer syntax pydicom's pylibjpeg plugins decode. Objects without
pixel data (SR, RT structure sets, DICOMDIRs met in a folder) are skipped; colour images are
reported as failed. Inputs are never modified.
"""

EPILOG = f"""\
outputs:
  OUTDIR mirrors the inputs: a file NAME.dcm -> OUTDIR/NAME.enhanced.dcm; a folder D ->
  OUTDIR/D/<same relative paths>; a DICOMDIR -> OUTDIR/<its folder>/<referenced paths>.
  --format dicom (default) writes a conformant derived instance: new SOP Instance and Series
  UIDs, Image Type DERIVED\\SECONDARY, derivation and source-image references, same patient,
  study, geometry, bit depth and rescale (CT HU preserved), Explicit VR Little Endian.
  --format png writes an 8-bit windowed image (multi-frame: a grid of frames); --format npy
  the enhanced modality values (HU for CT) as float32 (frames, rows, columns).
  --png-preview also writes NAME.preview.png: before | after, same window.
  Files are written atomically; existing outputs are kept (a re-run skips finished files)
  unless --overwrite.

strength:
  --strength S blends the model's change into the image: out = in + S * (model(in) - in),
  in the model's normalized space. 0 = off (the input comes back, within rounding; the model
  is not run), 1 = the model's output (default), between 0 and 1 = gentler ("Low"), above 1
  = stronger ("High"; up to {MAX_STRENGTH:g}), like the Low/Medium/High settings of commercial
  deep-learning reconstruction.
  Each enhanced file gets one line on stderr with its estimated noise before enhancement
  (CT: in HU, over soft tissue; MR, X-ray and others: in percent of the image's 0.5-99.5
  percentile range) and the strength; the derived DICOM's Derivation Description says both.

model and backends:
  --model FILE takes an .onnx model (ONNX Runtime: CPU, or its CUDA provider if installed)
  or a TensorRT .engine/.plan built by `python -m compiler build` (checked against this
  machine through its X.engine.json sidecar). Without --model: ${MODEL_ENV}, else
  models/{DEFAULT_MODELS[0]}, else models/{DEFAULT_MODELS[1]}.
  --backend auto picks by file kind; onnxruntime/tensorrt force one.

exit codes:
  0  every input enhanced or skipped (already done, no image in it, or a modality the
     model's contract does not list)
  1  at least one input failed (each failure is one line on stderr: file and cause)
  2  bad arguments, or the model/backend could not be opened
  130 interrupted (Ctrl-C); finished outputs are complete, no partial files remain
"""


@dataclass
class Settings:
    """What the command line asked for, as plain data."""

    outdir: Path
    fmt: str = "dicom"
    overwrite: bool = False
    preview: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    plan: TilePlan = field(default_factory=TilePlan)
    strength: float = DEFAULT_STRENGTH


@dataclass
class Tally:
    """Counts and timings for the summary line."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    milliseconds: list[float] = field(default_factory=list)

    def summary(self) -> str:
        median = f"{statistics.median(self.milliseconds):.1f}" if self.milliseconds else "n/a"
        return (
            f"medclear: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"median {median} ms per image"
        )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime.enhance", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="DICOM file, folder or DICOMDIR")
    parser.add_argument("-o", "--outdir", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--model", type=Path, help="model file: .onnx, or TensorRT .engine/.plan")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    parser.add_argument(
        "--strength", type=_strength_arg, default=DEFAULT_STRENGTH, metavar="S",
        help=f"0 = off, 1 = the model's output (default), >1 = stronger; at most {MAX_STRENGTH:g}",
    )
    parser.add_argument("--format", dest="fmt", choices=("dicom", "png", "npy"), default="dicom", help="output format")
    parser.add_argument("--png-preview", action="store_true", help="also write a before/after PNG per file")
    parser.add_argument("--dry-run", action="store_true", help="list what would be done; write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime (default: all)")
    parser.add_argument("--batch", type=int, default=4, help="frames or tiles per model call (default: 4)")
    parser.add_argument(
        "--tile", type=int, default=1024,
        help="images larger than this (pixels per side) run in overlapping tiles; 0 = never (default: 1024)",
    )
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default: 32)")
    parser.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay a CUDA graph per shape")
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more values than this, checked before decoding (default: {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _strength_arg(text: str) -> float:
    """argparse type for --strength: a usage error unless 0 <= S <= MAX_STRENGTH."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return check_strength(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class ModalityNotCovered(NotAnImage):
    """The model's contract does not list this image's modality: skipped, not guessed at."""


def _check_modality(ds, contract: ModelContract) -> str:
    modality = str(ds.get("Modality", "OT")).strip().upper() or "OT"
    if "*" not in contract.modalities and modality not in contract.modalities:
        raise ModalityNotCovered(
            f"modality {modality} is not one the model {contract.model_name} was trained for "
            f"({', '.join(contract.modalities)})"
        )
    return modality


def enhance_prepared(
    prepared: PreparedImage, infer: InferFn, plan: TilePlan, strength: float = DEFAULT_STRENGTH
) -> np.ndarray:
    """The one inference path: the model over every frame (padded, batched, tiled), blended
    with the input at ``strength``; normalized float32 ``(frames, rows, cols)`` for ``restore``."""
    if check_strength(strength) == 0:
        return prepared.normalized.copy()  # off: the model is not run
    return apply_strength(prepared.normalized, enhance_frames(prepared.normalized, infer, plan), strength)


def file_facts(noise: NoiseLevel, strength: float) -> str:
    """What the log line and the Derivation Description say about one file."""
    return f"estimated input {noise.describe()}; strength {strength:g}"


def enhance_file(job: Job, backend: Backend, settings: Settings, derivation: Derivation) -> NoiseLevel:
    """Enhance one file, write its outputs and return its estimated noise before enhancement.

    Raises InputError (or OSError on write) on failure.
    """
    ds = read_dataset(job.source)
    check_image(ds, settings.max_pixels)
    modality = _check_modality(ds, backend.contract)
    decode(ds)
    prepared = prepare(ds, backend.contract.normalization_for(modality))
    noise = prepared_noise(prepared)
    enhanced = enhance_prepared(prepared, backend.infer, settings.plan, settings.strength)
    if settings.fmt == "dicom":
        facts = replace(derivation, parameters=file_facts(noise, settings.strength))
        stored = restore(enhanced, prepared)
        write_dicom(job.output(settings.outdir, settings.fmt), derive(ds, stored, prepared.encoding, facts))
    if settings.fmt != "dicom" or settings.preview:
        _write_arrays(job, ds, prepared, enhanced, settings)
    return noise


def _write_arrays(job: Job, ds: Dataset, prepared: PreparedImage, enhanced: np.ndarray, settings: Settings) -> None:
    """The npy/png outputs and the before/after preview, in modality values."""
    target = job.output(settings.outdir, settings.fmt)
    values = modality_values(enhanced, prepared)
    if settings.fmt == "npy":
        write_npy(target, values)
    if settings.fmt == "png" or settings.preview:
        before = modality_values(prepared.normalized, prepared)
        window = display_window(ds, before, prepared.modality)
        if settings.fmt == "png":
            write_png(target, montage(to_display(values, window)))
        if settings.preview:
            middle = len(values) // 2
            image = side_by_side(to_display(before[middle], window), to_display(values[middle], window))
            write_png(job.preview(settings.outdir), image)


class Reporter:
    """Per-file lines on stderr (through tqdm so the bar stays intact)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        disable = quiet or not sys.stderr.isatty()
        self.bar = tqdm(total=total, file=sys.stderr, disable=disable, unit="file", dynamic_ncols=True)

    def line(self, text: str) -> None:
        self._tqdm.write(text, file=sys.stderr)

    def step(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _run_jobs(jobs: list[Job], backend: Backend, settings: Settings, reporter: Reporter) -> Tally:
    tally = Tally()
    contract = backend.contract
    model_id = contract.checkpoint_sha256 or sha256_file(backend.model_path)
    derivation = Derivation(
        description=(
            f"Denoised by {SOFTWARE_VERSION} with model {contract.model_name} "
            f"({contract.precision}, {backend.kind})"
        ),
        software_version=SOFTWARE_VERSION,
        model_name=contract.model_name,
        model_id=model_id,
    )
    for job in jobs:
        target = job.output(settings.outdir, settings.fmt)
        try:
            if target.exists() and not settings.overwrite:
                tally.skipped += 1
                reporter.line(f"medclear: skipped {job.source}: output exists ({target}); use --overwrite")
                continue
            start = time.perf_counter()
            noise = enhance_file(job, backend, settings, derivation)
            tally.milliseconds.append((time.perf_counter() - start) * 1000.0)
            tally.done += 1
            reporter.line(f"medclear: enhanced {job.source}: {file_facts(noise, settings.strength)}")
        except NotAnImage as error:
            tally.skipped += 1
            reporter.line(f"medclear: skipped {job.source}: {error}")
        except (InputError, UnsupportedImageError, ValueError) as error:
            tally.failed += 1
            reporter.line(f"medclear: FAILED {job.source}: {error}")
        except OSError as error:
            tally.failed += 1
            reporter.line(f"medclear: FAILED {job.source}: cannot write output: {error.strerror or error}")
        finally:
            reporter.step()
    return tally


def _dry_run(jobs: list[Job], settings: Settings, model: str) -> None:
    print(f"medclear: dry run with model {model}; nothing is written")
    for job in jobs:
        target = job.output(settings.outdir, settings.fmt)
        action = "skip (output exists)" if target.exists() and not settings.overwrite else "enhance"
        print(f"{action}: {job.source} -> {target}")


def _quiet_libraries() -> None:
    """pydicom's warnings can quote element values; keep them out of the logs."""
    warnings.filterwarnings("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    if args.batch < 1 or args.tile < 0 or args.overlap < 0:
        print("medclear: error: --batch must be >= 1, --tile and --overlap >= 0", file=sys.stderr)
        return EXIT_USAGE
    settings = Settings(outdir=args.outdir, fmt=args.fmt, overwrite=args.overwrite, preview=args.png_preview,
                        max_pixels=args.max_pixels, strength=args.strength)
    jobs, input_errors = discover(args.inputs, exclude=args.outdir)
    for path, reason in input_errors:
        print(f"medclear: FAILED {path}: {reason}", file=sys.stderr)
    try:
        backend = select_backend(args.model, args.backend, threads=args.threads, cuda_graphs=args.cuda_graphs)
        if args.dry_run:
            _dry_run(jobs, settings, str(backend.model_path))
            return EXIT_FAILED if input_errors else EXIT_OK
        backend.open()
    except BackendError as error:
        print(f"medclear: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    with backend:
        if backend.contract.scale != 1:
            print(f"medclear: error: {backend.model_path}: super-resolution models (scale "
                  f"{backend.contract.scale}) are not supported by this runtime", file=sys.stderr)
            return EXIT_USAGE
        settings.plan = _plan(args, backend)
        reporter = Reporter(len(jobs), args.quiet)
        try:
            tally = _run_jobs(jobs, backend, settings, reporter)
        except KeyboardInterrupt:
            reporter.close()
            print("medclear: interrupted; finished outputs are complete, no partial files", file=sys.stderr)
            return EXIT_INTERRUPTED
        reporter.close()
    tally.failed += len(input_errors)
    print(tally.summary() + f" ({backend.describe()})")
    return EXIT_FAILED if tally.failed else EXIT_OK


def _plan(args: argparse.Namespace, backend: Backend) -> TilePlan:
    """Tiling/batching within what the model accepts (a TensorRT profile bounds both)."""
    limits = backend.constraints
    tile, batch = args.tile, args.batch
    if limits.max_side is not None:
        tile = min(tile, limits.max_side) if tile else limits.max_side
    if limits.max_batch is not None:
        batch = min(batch, limits.max_batch)
    return TilePlan(size_multiple=limits.size_multiple, tile=tile, overlap=args.overlap, batch=batch,
                    min_side=limits.min_side)


if __name__ == "__main__":
    sys.exit(main())
