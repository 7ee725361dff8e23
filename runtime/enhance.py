"""python -m runtime.enhance: enhance DICOM images with a medclear model, writing derived DICOM.

One file at a time: read and check it before decoding, find the output names that belong to
this source, prepare it through the image contract, estimate its noise, run the model
(padded, batched, tiled), blend at the chosen strength, restore the source's encoding and
write the result atomically. Every enhanced file gets one line (noise and strength), every
problem one line naming the file and the cause, whatever went wrong; the batch goes on. Only
a backend that no longer runs at all stops the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

import numpy as np
from pydicom.dataset import Dataset

from runtime.backends import Backend, BackendError
from runtime.backends.select import (
    BACKENDS, DEFAULT_MODELS, DEFAULT_TASK, MODEL_ENV, MR_DENOISE_MODELS, MR_SR2_MODELS, SR2_MODEL_ENV, SR2_MODELS, TASK_MODELS,
    first_installed, modality_model,
)
from runtime.backends.triton_backend import DEFAULT_IN_FLIGHT, DEFAULT_MODEL_NAME, PROTOCOLS, TritonTarget
from runtime.derived import Derivation, derive
from runtime.dicom_io import DEFAULT_MAX_PIXELS, InputError, Skipped, check_image, decode, read_dataset
from runtime.image_contract import PreparedImage, modality_values, prepare, restore
from runtime.inputs import Job, discover, foreign_files
from runtime.logtext import cause, described, safe
from runtime.noise import NoiseLevel, prepared_noise
from runtime.outputs import (
    display_window, montage, side_by_side, to_display, write_dicom, write_json, write_npy, write_png,
)
from runtime.pipeline import (  # the one inference path
    DEFAULT_BATCH, DEFAULT_OVERLAP, DEFAULT_TILE, ModalityError, check_modality, enhance_prepared, open_model,
    prepared_level, tile_plan,
)
from runtime.provenance import SOURCE_KEY, claim_output, npy_record, source_uid
from runtime.report import Reporter, Tally, file_line
from runtime.resample import bicubic, nearest
from runtime.routing import Group, given_model, modality_groups, parse_modality_model, routes_by_modality
from runtime.signals import Terminated, sigterm_as_interrupt
from runtime.strength import DEFAULT_STRENGTH, MAX_STRENGTH, check_strength
from runtime.tiling import InferFn, TilePlan

SOFTWARE_VERSION = "medclear 0.1.0"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

DESCRIPTION = """\
Enhance DICOM images with a medclear model (denoise, or --task sr2: x2 super-resolution)
and write the results as new files.

INPUTS are DICOM files, folders (searched recursively) or DICOMDIR files (their referenced
images are processed). Single-frame and enhanced multi-frame greyscale images (MONOCHROME1/2)
are enhanced, in any transfer syntax pydicom's pylibjpeg plugins decode. Objects without
pixel data (structured reports, RT plans and structure sets, presentation states, DICOMDIRs
met in a folder) are skipped; colour images and image files that cannot be read (corrupt,
truncated) are reported as failed. Inputs are never modified.
"""

EPILOG = f"""\
outputs:
  OUTDIR mirrors the inputs: a file NAME.dcm -> OUTDIR/NAME.enhanced.dcm; a folder D ->
  OUTDIR/D/<same relative paths>; a DICOMDIR -> OUTDIR/<its folder>/<referenced paths>.
  OUTDIR must not contain an input (e.g. -o . with inputs below it); inside an input
  folder it is fine (it is not searched) while it holds only medclear's outputs.
  --format dicom (default) writes a conformant derived instance: new SOP Instance and Series
  UIDs, Image Type DERIVED\\SECONDARY, derivation and source-image references, same patient,
  study, geometry, bit depth and rescale (CT HU preserved), Explicit VR Little Endian.
  --format png writes an 8-bit windowed image (multi-frame: a grid of frames); --format npy
  the enhanced modality values (HU for CT) as float32 (frames, rows, columns), with
  NAME.enhanced.npy.json naming its source.
  --png-preview also writes NAME.preview.png: before | after, same window (super-resolution:
  input (nearest x2) | bicubic | model).
  Files are written atomically. An existing output counts as done only if it was derived
  from the same source (same SOP Instance UID): a re-run skips it (and makes a missing
  preview) unless --overwrite. An output of another source (two patients' files with the
  same name) is never skipped or replaced: this source's output gets the name
  NAME.<12-digit digest of its SOP Instance UID>.enhanced.dcm instead.

strength:
  --strength S blends the model's change into the image: out = in + S * (model(in) - in),
  in the model's normalized space. 0 = off (the input comes back, within rounding; the model
  is not run), 1 = the model's output (default), between 0 and 1 = gentler ("Low"), above 1
  = stronger ("High"; up to {MAX_STRENGTH:g}), like the Low/Medium/High settings of commercial
  deep-learning reconstruction. A super-resolution model blends with the bicubic upsampled
  input instead: 0 = bicubic, 1 = the model (default); above 1 is refused (exit 2).
  Each enhanced file gets one line on stderr with its estimated noise before enhancement
  (CT: in HU, over soft tissue; MR, X-ray and others: in percent of the image's 0.5-99.5
  percentile range) and the strength; the derived DICOM's Derivation Description says both.

tasks and super-resolution:
  --task denoise or sr2 chooses the default model (below; no --task: denoise) and, given with
  --model, checks that the model does that task (its contract's scale); without --task a named
  model runs as its contract says. An sr2 model writes an image with
  twice the Rows and Columns over the same area: Pixel Spacing (and Imager / Nominal Scanned
  Pixel Spacing) halved, Image Position (Patient) moved to the centre of the new first pixel,
  the same for enhanced multi-frame functional groups; Derivation Code "Spatial resampling".
  --max-pixels counts the output's values. Denoise, then upscale: run this command twice
  (docs/RUNTIME.md).

model and backends:
  --model FILE takes an .onnx model (ONNX Runtime: CPU, or its CUDA provider if installed)
  or a TensorRT .engine/.plan built by `python -m compiler build` (checked against this
  machine through its X.engine.json sidecar). Without --model each file goes to its
  modality's model, read from its header: MR to models/{MR_DENOISE_MODELS[0]} (else its
  int8 twin), everything else (CT, CR, DX) to models/{DEFAULT_MODELS[0]}, else
  models/{DEFAULT_MODELS[1]}; ${MODEL_ENV}, when set, serves every file instead.
  With --task sr2: MR to models/{MR_SR2_MODELS[0]} (else its int8 twin), everything else
  to models/{SR2_MODELS[0]}, else models/{SR2_MODELS[1]} (released for CT);
  ${SR2_MODEL_ENV}, when set, serves every file instead. A named model (a bare file name
  that is not in the current folder means the installed model of that name, e.g. --model
  {MR_SR2_MODELS[1]}) serves the whole run: files of modalities it does not cover are
  skipped, and the line names their model. --modality-model MODALITY=MODEL sends that
  modality's files to MODEL beside it (engines: MR=medclear_student_mr.int8.engine), opened
  with the same --backend (leave it auto when the kinds differ).
  --backend auto picks by file kind; onnxruntime/tensorrt force one.
  --backend triton --url HOST:PORT [--model-name NAME] runs the model on a Triton Inference
  Server (a repository from `python -m compiler triton-repo`; its contract is read from the
  server): gRPC by default, --protocol http; --in-flight requests outstanding at a time.
  The server's one model serves every file, except modalities --modality-model sends
  elsewhere (e.g. MR=grpc://HOST:PORT/medclear_mr, docs/SCALE_OUT.md).
  --threads N is at most this machine's CPU count (larger values are lowered to it).
  --max-pixels (default {DEFAULT_MAX_PIXELS}) bounds rows x columns x frames per file so
  that a default run stays within about 2 GiB of memory (docs/RUNTIME.md).

exit codes:
  0   every input enhanced or skipped (already done, no image in it, or a modality the
      model's contract does not list)
  1   at least one input failed (each failure is one line on stderr: file and cause; a
      file with NaN/infinite values in or out is a failure, nothing is written for it)
  2   bad arguments, or the model/backend could not be opened or stopped working
  130 interrupted (Ctrl-C); finished outputs are complete, no partial files remain
  143 terminated (SIGTERM); the same as 130
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

    @classmethod
    def from_cli(cls, args: argparse.Namespace, backend: Backend | None = None) -> Settings:
        """The settings the parsed command line ``args`` asks for; with ``backend``, checked
        against its model (ValueError if ``--strength`` does not suit it: an x2 model takes at
        most 1) and with the tile plan its model and ``--tile/--overlap/--batch`` give (else the
        default plan)."""
        settings = cls(outdir=args.outdir, fmt=args.fmt, overwrite=args.overwrite, preview=args.png_preview,
                       max_pixels=args.max_pixels, strength=args.strength)
        if backend is not None:
            check_strength(settings.strength, backend.contract.scale)
            settings.plan = tile_plan(backend, tile=args.tile, overlap=args.overlap, batch=args.batch)
        return settings


@dataclass(frozen=True)
class Outcome:
    """One enhanced file: its noise before enhancement and the names its outputs went to."""

    noise: NoiseLevel
    job: Job


class InferenceError(RuntimeError):
    """The backend raised while running the model on one file."""


class BackendUnusable(RuntimeError):
    """The backend no longer runs even a plain input: the run stops (exit 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other error of this command."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"medclear: error: {message} (python -m runtime.enhance --help explains the options)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = OneLineParser(
        prog="python -m runtime.enhance", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="DICOM file, folder or DICOMDIR")
    parser.add_argument("-o", "--outdir", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--model", type=Path, help="model file: .onnx, or TensorRT .engine/.plan")
    parser.add_argument("--modality-model", type=_modality_model_arg, action="append", metavar="MODALITY=MODEL",
                        help="files of MODALITY (read from the header) go to MODEL instead (a file, engine or "
                             "Triton model URL grpc://HOST:PORT/NAME), e.g. MR=medclear_student_mr.int8.engine "
                             "beside --model medclear_student.int8.engine; repeatable")
    parser.add_argument("--task", choices=tuple(TASK_MODELS),
                        help=f"denoise or sr2 (x2 super-resolution): picks the default models, {DEFAULT_TASK} "
                             f"when not given (without --model each file goes to its modality's model: MR to "
                             f"{MR_DENOISE_MODELS[0]} or {MR_SR2_MODELS[0]}, the rest to the task's default "
                             f"model); given with --model, also checks that the model does it")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    parser.add_argument(
        "--strength", type=_strength_arg, default=DEFAULT_STRENGTH, metavar="S",
        help=f"0 = off, 1 = the model's output (default), >1 = stronger; at most {MAX_STRENGTH:g} "
             "(super-resolution: 0 = bicubic to 1); about 0.9 keeps more brain detail on routine-dose head CT "
             "with a smooth kernel (docs/RUNTIME.md)",
    )
    parser.add_argument("--format", dest="fmt", choices=("dicom", "png", "npy"), default="dicom", help="output format")
    parser.add_argument("--png-preview", action="store_true",
                        help="also write a before/after PNG per file (super-resolution: input | bicubic | model)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check every file as the run would and list what it would do; write nothing")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs derived from the same source")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for ONNX Runtime (default: all; at most the CPU count)")
    parser.add_argument("--batch", type=int,
                        help=f"frames or tiles per model call (default: {DEFAULT_BATCH}; Triton: --in-flight; "
                             "more helps on GPUs and costs memory)")
    parser.add_argument(
        "--tile", type=int, default=DEFAULT_TILE,
        help=f"images larger than this (pixels per side) run in overlapping tiles; 0 = never (default: {DEFAULT_TILE})",
    )
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                        help=f"tile overlap in pixels (default: {DEFAULT_OVERLAP})")
    parser.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay a CUDA graph per shape")
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more values than this, checked before decoding (default: {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    triton = parser.add_argument_group("Triton Inference Server (--backend triton; pip install 'medclear[triton]')")
    triton.add_argument("--url", help="the server's HOST:PORT (gRPC, Triton's default port 8001; HTTP: 8000)")
    triton.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                        help=f"model name in the server's repository (default: {DEFAULT_MODEL_NAME})")
    triton.add_argument("--protocol", choices=PROTOCOLS, default="grpc", help="gRPC (default) or HTTP")
    triton.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT,
                        help=f"requests kept outstanding so the server can batch them (default: {DEFAULT_IN_FLIGHT})")
    return parser


def _modality_model_arg(text: str) -> tuple[str, Path | str]:
    """argparse type for --modality-model: ``(MODALITY, MODEL)``, a usage error otherwise."""
    try:
        return parse_modality_model(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def file_groups(args: argparse.Namespace, jobs: list[Job], remote: bool) -> list[Group]:
    """Which model serves which of ``jobs`` (runtime/routing.py): ``--modality-model`` first, then
    the named model (``--model``, the task's variable, a Triton server's) or each modality's own."""
    routed = routes_by_modality(args.task, args.model, remote)
    overrides = {modality: given_model(model) for modality, model in args.modality_model or []}
    if not routed and not overrides:
        return [(args.model, jobs)]
    return modality_groups(jobs, args.task or DEFAULT_TASK, routed=routed, model=args.model, overrides=overrides)


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


class ModalityNotCovered(Skipped):
    """The model's contract does not list this image's modality: skipped, not guessed at."""


def _check_modality(ds: Dataset, backend: Backend) -> str:
    modality = str(ds.get("Modality", "OT"))
    try:
        return check_modality(backend.contract, modality)
    except ModalityError as error:
        raise ModalityNotCovered(f"{error}{_model_hint(modality, backend)}") from None


def _model_hint(modality: str, backend: Backend) -> str:
    """``; its denoiser is NAME (--model NAME)``: the installed model that a run naming no model
    gives ``modality``, when that is another file than ``backend``'s; else nothing."""
    # Installed files only, not routing.routed_model: that would name $MEDCLEAR_MODEL (a path or URL
    # that --model NAME may not find) or the x2 default for a modality that it does not cover either.
    task = "sr2" if backend.contract.scale == 2 else DEFAULT_TASK
    own = modality_model(modality, task)
    if own is None and task == DEFAULT_TASK:  # the default denoiser covers every modality
        own = first_installed(DEFAULT_MODELS)
    if own is None or own.name == Path(str(backend.source)).name:
        return ""
    return f"; its {'x2 model' if task == 'sr2' else 'denoiser'} is {own.name} (--model {own.name})"


def file_facts(noise: NoiseLevel, strength: float) -> str:
    """What the log line and the Derivation Description say about one file."""
    return f"estimated input {noise.describe()}; strength {strength:g}"


def _require_finite(values: np.ndarray, problem: str) -> None:
    if not np.isfinite(values).all():
        raise InputError(problem)


def _guarded(infer: InferFn) -> InferFn:
    """``infer`` with any backend exception turned into InferenceError (one line)."""
    def run(batch: np.ndarray) -> np.ndarray:
        try:
            return infer(batch)
        except Exception as error:  # onnxruntime/TensorRT raise their own types
            raise InferenceError(f"inference failed: {described(error)}") from error
    return run


def enhance_file(job: Job, backend: Backend, settings: Settings, derivation: Derivation) -> Outcome:
    """Enhance one file and write its outputs under the names that belong to its source.

    Raises Skipped (nothing to do), InputError / UnsupportedImageError (the file cannot be
    enhanced), InferenceError (the backend raised) or OSError (on write).
    """
    ds = read_dataset(job.source)
    check_image(ds, settings.max_pixels, backend.contract.scale)
    modality = _check_modality(ds, backend)
    uid = source_uid(ds)
    job = claim_output(job, uid, settings.outdir, settings.fmt, settings.overwrite, settings.preview)
    decode(ds)
    prepared = prepare(ds, backend.contract.normalization_for(modality))
    _require_finite(prepared.normalized, "image values are not finite (NaN or infinite Rescale Slope/Intercept "
                                         "or values out of range)")
    noise = prepared_noise(prepared)
    level = prepared_level(backend.contract, noise)
    enhanced = enhance_prepared(prepared, _guarded(backend.infer), settings.plan, settings.strength, level)
    _require_finite(enhanced, "the model's output contains NaN or infinite values; nothing written")
    if settings.fmt == "dicom":
        facts = replace(derivation, parameters=file_facts(noise.reported, settings.strength))
        stored = restore(enhanced, prepared)
        write_dicom(job.output(settings.outdir, settings.fmt), derive(ds, stored, prepared.encoding, facts))
    if settings.fmt != "dicom" or settings.preview:
        _write_arrays(job, ds, prepared, enhanced, settings, uid)
    return Outcome(noise.reported, job)


def _write_arrays(
    job: Job, ds: Dataset, prepared: PreparedImage, enhanced: np.ndarray, settings: Settings, uid: str
) -> None:
    """The npy/png outputs and the before/after preview, in modality values, naming their source."""
    target = job.output(settings.outdir, settings.fmt)
    values = modality_values(enhanced, prepared)
    text = {SOURCE_KEY: uid}
    if settings.fmt == "npy":
        # The record first: a stray record is rewritten by the next run, an NPY without one would be foreign.
        write_json(npy_record(target), {"source_sop_instance_uid": uid, "software": SOFTWARE_VERSION})
        try:
            write_npy(target, values)
        except BaseException:
            npy_record(target).unlink(missing_ok=True)  # nothing written for a failed file
            raise
    if settings.fmt == "png" or settings.preview:
        before = modality_values(prepared.normalized, prepared)
        window = display_window(ds, before, prepared.modality)
        if settings.fmt == "png":
            write_png(target, montage(to_display(values, window)), text)
        if settings.preview:
            middle = len(values) // 2
            panels = preview_panels(before[middle], values[middle])
            write_png(job.preview(settings.outdir), side_by_side(*(to_display(p, window) for p in panels)), text)


def preview_panels(before: np.ndarray, after: np.ndarray) -> list[np.ndarray]:
    """before | after; for super-resolution (``after`` larger): input (nearest) | bicubic | model."""
    scale = after.shape[-1] // before.shape[-1]
    if scale == 1:
        return [before, after]
    return [nearest(before, scale), bicubic(before, scale), after]


def derivation_for(backend: Backend) -> Derivation:
    contract = backend.contract
    what = "Denoised" if contract.scale == 1 else f"x{contract.scale} super-resolution"
    model_file = getattr(backend, "model_path", None)  # tells apart models of one architecture (the x2 CT and MR)
    source = f"{Path(model_file).name}; " if model_file else ""
    return Derivation(
        description=f"{what} by {SOFTWARE_VERSION} with model {contract.model_name} "
                    f"({source}{contract.precision}, {backend.kind})",
        software_version=SOFTWARE_VERSION,
        model_name=contract.model_name,
        model_id=contract.checkpoint_sha256 or backend.model_id(),
        scale=contract.scale,
    )


def check_backend(backend: Backend, plan: TilePlan, failure: InferenceError) -> None:
    """After a failed inference: BackendUnusable unless the model still runs a plain input."""
    low = backend.constraints.min_shape
    side = plan.padded_side(1)
    probe = np.zeros((low[0] if low else 1, backend.contract.input_channels, side, side), dtype=np.float32)
    try:
        backend.infer(probe)
    except Exception as error:  # whatever the backend raises: it cannot serve any file now
        raise BackendUnusable(
            f"{backend.describe()} stopped working ({cause(failure)}; a plain test input fails too: "
            f"{described(error)}); the remaining files are not processed"
        ) from None


def failure_cause(error: Exception) -> str:
    """The cause of a per-file failure, for any exception type."""
    if isinstance(error, MemoryError):
        return "out of memory for this image (lower --max-pixels, --batch or --tile, or free memory)"
    if isinstance(error, OSError):  # reading errors are InputErrors already
        return f"cannot write output: {error.strerror or error}"
    if isinstance(error, (ValueError, InferenceError)):  # InputError, UnsupportedImageError, contract lookups
        return str(error)
    return f"unexpected error: {described(error)}"


def run_jobs(jobs: list[Job], backend: Backend, settings: Settings, reporter: Reporter,
             tally: Tally | None = None) -> Tally:
    """Enhance ``jobs`` with ``backend``, one line per file; counts go into ``tally`` (a new one
    by default). Raises BackendUnusable when the backend stops running at all."""
    tally = tally if tally is not None else Tally()
    derivation = derivation_for(backend)
    for job in jobs:
        try:
            start = time.perf_counter()
            outcome = enhance_file(job, backend, settings, derivation)
            tally.milliseconds.append((time.perf_counter() - start) * 1000.0)
            tally.done += 1
            note = "" if outcome.job == job else (
                f"; written as {outcome.job.output(settings.outdir, settings.fmt)} "
                "(the plain name holds another source's output)"
            )
            reporter.file("enhanced", job.source, file_facts(outcome.noise, settings.strength) + note)
        except Skipped as error:
            tally.skipped += 1
            reporter.file("skipped", job.source, str(error))
        except Exception as error:  # one bad file never stops the batch
            tally.failed += 1
            reporter.file("FAILED", job.source, failure_cause(error))
            if isinstance(error, InferenceError):
                check_backend(backend, settings.plan, error)
        finally:
            reporter.step()
    return tally


def _dry_run(jobs: list[Job], settings: Settings, backend: Backend) -> int:
    """What a run would do with each file (headers read and checked as the run checks them,
    nothing written); returns how many files the run would fail."""
    print(f"medclear: dry run with model {safe(backend.source)}; nothing is written")
    failures = 0
    for job in jobs:
        try:
            ds = read_dataset(job.source)
            check_image(ds, settings.max_pixels, backend.contract.scale)
            _check_modality(ds, backend)
            job_for_source = claim_output(
                job, source_uid(ds), settings.outdir, settings.fmt, settings.overwrite, settings.preview
            )
            print(f"enhance: {safe(job.source)} -> {safe(job_for_source.output(settings.outdir, settings.fmt))}")
        except Skipped as error:
            print(f"skip: {safe(job.source)}: {cause(error)}")
        except Exception as error:  # the real run would report it as FAILED
            failures += 1
            print(f"fail: {safe(job.source)}: {cause(failure_cause(error))}")
    return failures


def _quiet_libraries() -> None:
    """pydicom's warnings can quote element values; keep them out of the logs."""
    warnings.filterwarnings("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot work, or None."""
    if (args.batch is not None and args.batch < 1) or args.tile < 0 or args.overlap < 0:
        return "--batch must be >= 1, --tile and --overlap >= 0"
    if args.max_pixels < 1:
        return "--max-pixels must be >= 1"
    if args.threads is not None and args.threads < 1:
        return "--threads must be >= 1"
    if args.url is None and args.backend == "triton":
        return "--backend triton needs --url HOST:PORT (the Triton server)"
    if args.url is not None and (args.backend not in ("auto", "triton") or args.model is not None):
        return "--url is for the Triton backend: use it without --model and with --backend triton (or auto)"
    outdir = args.outdir.resolve()
    for item in args.inputs:
        if item.exists() and item.resolve().is_relative_to(outdir):
            return (
                f"the output folder {safe(args.outdir)} contains the input {safe(item)}; choose an output "
                "folder outside the inputs (a folder inside an input folder is fine)"
            )
        if item.is_dir() and outdir.is_relative_to(item.resolve()):
            foreign = foreign_files(outdir)  # the walk skips the output folder: these would be left out
            if foreign:
                return (
                    f"the output folder {safe(args.outdir)} inside the input folder {safe(item)} holds {len(foreign)} "
                    f"file(s) medclear did not write (e.g. {safe(foreign[0].relative_to(outdir))}), which the run would "
                    "leave out; choose an output folder that holds no inputs"
                )
    return None


def triton_target(args: argparse.Namespace) -> TritonTarget | None:
    """The Triton server and model the arguments name, or None (BackendError if malformed)."""
    if args.url is None:
        return None
    return TritonTarget(args.url, args.model_name, args.protocol, in_flight=args.in_flight)


def bounded_threads(threads: int | None) -> int | None:
    """--threads, lowered to this machine's CPU count (with a note) if larger."""
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        print(f"medclear: --threads {threads} is more than this machine's {cpus} CPUs; using {cpus}",
              file=sys.stderr)
        return cpus
    return threads


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    with sigterm_as_interrupt():
        try:
            return _main(args)
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, Terminated)
            print(f"medclear: {'terminated' if terminated else 'interrupted'}; finished outputs are complete, "
                  "no partial files", file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _main(args: argparse.Namespace) -> int:
    problem = usage_problem(args)
    if problem:
        print(f"medclear: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    threads = bounded_threads(args.threads)
    jobs, input_errors = discover(args.inputs, exclude=args.outdir)
    for path, reason in input_errors:
        print(file_line("FAILED", path, reason), file=sys.stderr)
    with ExitStack() as opened:
        try:
            server = triton_target(args)
            # The --url server serves the run's own model; a --modality-model names its model itself.
            backends = [(opened.enter_context(open_model(model, args.backend, threads=threads,
                                                         cuda_graphs=args.cuda_graphs, task=args.task,
                                                         server=server if model is None else
                                                         TritonTarget.from_model_url(model, in_flight=args.in_flight))),
                         group) for model, group in file_groups(args, jobs, server is not None)]
        except BackendError as error:
            print(f"medclear: error: {cause(error, 1000)}", file=sys.stderr)
            return EXIT_USAGE
        try:
            runs = [(backend, Settings.from_cli(args, backend), group) for backend, group in backends]
        except ValueError as error:
            print(f"medclear: error: --strength: {error}", file=sys.stderr)
            return EXIT_USAGE
        if args.dry_run:
            failures = sum(_dry_run(group, settings, backend) for backend, settings, group in runs)
            return EXIT_FAILED if failures or input_errors else EXIT_OK
        tally = Tally()
        reporter = Reporter(len(jobs), args.quiet)
        try:
            for backend, settings, group in runs:
                run_jobs(group, backend, settings, reporter, tally)
        except BackendUnusable as error:
            print(f"medclear: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            reporter.close()
        served = (backends[0][0].describe() if len(backends) == 1 else  # several: say which model served
                  "; ".join(f"{Path(backend.source).name} on {backend.describe()}" for backend, _ in backends))
    tally.failed += len(input_errors)
    print(tally.summary() + f" ({served})")
    return EXIT_FAILED if tally.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
