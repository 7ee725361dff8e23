"""``prepare``: read the cases, render every case x arm x window under a random opaque id, and
write the manifest. The manifest is written last, so a failed run leaves no usable study."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pydicom.dataset import Dataset

from benchmarks.reader_study.arms import ArmRunner, ab_pairs as all_pairs
from benchmarks.reader_study.manifest import IMAGES, MANIFEST, Arm, Case, Study, StudyError
from benchmarks.reader_study.render import case_windows, grey_levels, write_image
from benchmarks.reader_study.store import DATABASE, Store
from runtime.backends import BackendError
from runtime.dicom_io import Skipped, check_image, decode, read_dataset
from runtime.image_contract import modality_image
from runtime.inputs import discover
from runtime.logtext import cause, safe

Log = Callable[[str], None]


def check_target(out: Path, overwrite: bool) -> None:
    """StudyError unless ``out`` may receive a new study: no answers in it, and no manifest
    unless ``overwrite``."""
    if (out / DATABASE).exists() and Store(out / DATABASE).has_answers():
        raise StudyError(f"{out / DATABASE}: this study already has answers; prepare a new study in another folder")
    if (out / MANIFEST).exists() and not overwrite:
        raise StudyError(f"{out / MANIFEST}: a study is already prepared here (--overwrite replaces it)")


def read_cases(inputs: list[Path], out: Path, log: Log) -> list[tuple[Path, Dataset]]:
    """The decoded image datasets of the inputs (files, folders, DICOMDIRs); StudyError naming
    every file that cannot be read. Objects without an image are left out with a line."""
    jobs, errors = discover(inputs, exclude=out)
    problems = [f"{safe(path)}: {cause(reason)}" for path, reason in errors]
    cases: list[tuple[Path, Dataset]] = []
    seen: set[str] = set()
    for job in jobs:
        try:
            ds = read_dataset(job.source)
            check_image(ds)
            decode(ds)
        except Skipped as error:
            log(f"skipped {safe(job.source)}: {cause(error)}")
            continue
        except ValueError as error:  # InputError, UnsupportedImageError
            problems.append(f"{safe(job.source)}: {cause(error)}")
            continue
        uid = str(ds.SOPInstanceUID)
        if uid in seen:
            problems.append(f"{safe(job.source)}: the same image (SOP Instance UID) as an earlier case")
            continue
        seen.add(uid)
        cases.append((job.source, ds))
    if problems:
        raise StudyError("; ".join(problems))
    if not cases:
        raise StudyError(f"{', '.join(safe(p) for p in inputs)}: no DICOM image among the inputs")
    return cases


def render_case(case_id: str, source: Path, ds: Dataset, arms: list[Arm], runner: ArmRunner, images: Path) -> Case:
    """Every arm of one case in every window preset, written as ``images/<opaque id>.png``."""
    values, encoding, _ = modality_image(ds)
    frame = len(values) // 2
    windows = case_windows(ds, values[frame], encoding.modality)
    rendered: dict[str, dict[str, str]] = {}
    for arm in arms:
        try:
            arm_values = runner.values(arm, ds, frame)
        except ValueError as error:  # ModalityError, a model that cannot run this image
            raise StudyError(f"{safe(source)}: arm {arm.label}: {cause(error)}") from None
        if arm_values.shape != values[frame].shape:  # the image size alone would tell readers the arm
            raise StudyError(f"{safe(source)}: arm {arm.label} makes a {arm_values.shape[1]} x {arm_values.shape[0]} "
                             f"image of a {values[frame].shape[1]} x {values[frame].shape[0]} one (a super-resolution "
                             "model?); every arm of a blinded case must keep the image size")
        rendered[arm.id] = {}
        for name, window in windows:
            image_id = secrets.token_hex(16)
            write_image(images / f"{image_id}.png", grey_levels(arm_values, window, encoding.photometric))
            rendered[arm.id][name] = image_id
    return Case(case_id, str(source), encoding.modality, frame, tuple(name for name, _ in windows), rendered)


def prepare_study(
    inputs: list[Path], out: Path, arms: list[Arm], *, seed: int, model: Path | None = None,
    overwrite: bool = False, log: Log = print, ab_pairs: list[tuple[str, str]] | None = None,
) -> Study:
    """Render the study into ``out`` and write its manifest; StudyError (one line) on bad input."""
    check_target(out, overwrite)
    datasets = read_cases(inputs, out, log)
    images = out / IMAGES
    old = set(images.glob("*.png")) if images.is_dir() else set()
    runner = ArmRunner(model)
    try:
        runner.backend()  # the default model opens (or fails) before any rendering
        cases = [render_case(f"c{index:02d}", source, ds, arms, runner, images)
                 for index, (source, ds) in enumerate(datasets, 1)]
    except BaseException as error:
        for written in set(images.glob("*.png")) - old:  # a failed prepare leaves nothing behind
            written.unlink(missing_ok=True)
        if isinstance(error, BackendError):
            raise StudyError(cause(error, 400)) from None
        raise
    finally:
        runner.close()
    study = Study(out, seed, arms, cases, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  all_pairs(arms) if ab_pairs is None else list(ab_pairs))
    study.save()
    for stale in old:  # a replaced study's images
        stale.unlink(missing_ok=True)
    log(f"reader study: {len(cases)} cases x {len(arms)} arms rendered into {safe(out)} (seed {seed})")
    return study
