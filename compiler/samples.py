"""Input images for export checks, calibration and verification.

Real images go through the runtime's own preparation (``runtime.image_contract.prepare`` with
the model contract's normalization), so calibration and checks see exactly what the bedside
runtime will feed the model: a ``noise_map`` model also gets each image's noise level
(``runtime.pipeline.noise_map_level``) as its second channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from compiler.errors import CompilerError
from runtime.image_contract import prepare
from runtime.model_contract import ModelContract
from runtime.pipeline import add_noise_map, noise_map_level, synthetic_input
from runtime.pixels import UnsupportedImageError
from trainer.data.offline import offline_dicom_files

# Packaged CT slices split as trainer.data splits them (docs/DATA.md): calibration never uses a
# test-split slice (under the shipped three-way split the 693_* slice, one image in several
# encodings, is a validation image, the others train), checks use only test-split ones;
# tests/test_compiler_calibrate.py checks both against trainer/configs/default_qat.json.
CALIBRATION_CT = ("eCT_Supplemental.dcm", "bad_sequence.dcm", "693_UNCI.dcm")
HELDOUT_CT = ("explicit_VR-UN.dcm", "CT_small.dcm")
SMALL_HELDOUT_CT = "CT_small.dcm"  # 128 x 128: quick real input for export checks
# A model released for other modalities only (the MR x2 model) is checked on its modality's
# test-split image (484 x 484).
HELDOUT_BY_MODALITY = {"CT": HELDOUT_CT, "MR": ("MR-SIEMENS-DICOM-WithOverlays.dcm",)}
SMALL_HELDOUT_BY_MODALITY = {"CT": (SMALL_HELDOUT_CT,), "MR": HELDOUT_BY_MODALITY["MR"]}


def _crop_or_pad(image: np.ndarray, targets: tuple[int, int], centre_pad: bool) -> np.ndarray:
    """Center-crop each axis longer than its target; edge-pad shorter ones (at the end, or centred)."""
    out = image
    for axis, target in enumerate(targets):
        size = out.shape[axis]
        if size > target:
            start = (size - target) // 2
            out = np.take(out, range(start, start + target), axis=axis)
        elif size < target:
            before = (target - size) // 2 if centre_pad else 0
            pad = [(0, 0), (0, 0)]
            pad[axis] = (before, target - size - before)
            out = np.pad(out, pad, mode="edge")
    return np.ascontiguousarray(out, dtype=np.float32)


def fit_to_multiple(image: np.ndarray, multiple: int, max_side: int | None = None) -> np.ndarray:
    """Center-crop a 2-D image to a multiple of ``multiple`` (at most ``max_side``); pad if too small."""
    targets = []
    for size in image.shape[:2]:
        target = size if max_side is None else min(size, max_side)
        targets.append(max(multiple, target - target % multiple))
    return _crop_or_pad(image, (targets[0], targets[1]), centre_pad=False)


def fit_to_shape(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Center-crop or edge-pad a 2-D image to exactly (height, width)."""
    return _crop_or_pad(image, (height, width), centre_pad=True)


@dataclass(frozen=True)
class Frame:
    """A prepared 2-D frame and the noise level a ``noise_map`` model is given with it (None:
    a blind model), measured on its whole image as the runtime measures it."""

    image: np.ndarray  # normalized float32 (rows, cols)
    level: float | None = None

    def batch(self, image: np.ndarray | None = None, count: int = 1) -> np.ndarray:
        """``image`` (this frame cropped or padded; default the frame) as ``count`` model inputs
        ``[count, C, H, W]``."""
        images = np.repeat((self.image if image is None else image)[None, None], count, axis=0)
        return add_noise_map(images, self.level)


def dicom_files(root: str | Path) -> list[Path]:
    """A file, or every file below a folder (sorted); CompilerError if there are none."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CompilerError(f"{root}: no such DICOM file or folder")
    files = sorted(path for path in root.rglob("*") if path.is_file())
    if not files:
        raise CompilerError(f"{root}: folder holds no files")
    return files


def prepared_frames(paths: list[Path], contract: ModelContract, limit: int | None = None) -> list[Frame]:
    """Normalized 2-D frames (with their noise level for a ``noise_map`` model) of every
    readable greyscale image in ``paths``.

    Files that are not DICOM images, or of a modality the model does not declare, are
    skipped; CompilerError if nothing usable remains. Reading stops after ``limit`` frames.
    """
    frames: list[Frame] = []
    declared = {m.upper() for m in contract.modalities}
    for path in paths:
        if limit is not None and len(frames) >= limit:
            break
        try:
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds:
                continue
            modality = str(ds.get("Modality", "OT")).upper()
            if declared and "*" not in declared and modality not in declared:
                continue
            prepared = prepare(ds, contract.normalization_for(modality))
        except (InvalidDicomError, UnsupportedImageError, OSError, ValueError, AttributeError,
                KeyError, TypeError, RuntimeError, NotImplementedError):
            # Unreadable, non-image or undecodable files are skipped: a folder may hold anything.
            continue
        level = noise_map_level(contract, prepared.normalized, prepared.states, prepared.modality, prepared.padding)
        frames.extend(Frame(np.asarray(frame, dtype=np.float32), level) for frame in prepared.normalized)
    frames = frames[:limit]
    if not frames:
        names = ", ".join(sorted(declared)) or "any"
        raise CompilerError(
            f"{paths[0].parent if paths else '?'}: no readable DICOM image of modality {names}"
        )
    return frames


def packaged_heldout(contract: ModelContract, table: dict[str, tuple[str, ...]] = HELDOUT_BY_MODALITY) -> list[Path]:
    """The packaged test-split files of the first modality in ``table`` that the contract covers
    (CT first), those present on this machine; [] if it covers none of them."""
    for modality, names in table.items():
        if contract.covers(modality):
            return packaged_files(names)
    return []


def packaged_files(names: tuple[str, ...]) -> list[Path]:
    """The packaged DICOM files (any modality) with the given file names, those present on this machine, in that order."""
    found = {path.name: path for path in offline_dicom_files() if path.name in names}
    return [found[name] for name in names if name in found]


def random_batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A ``[N, C, H, W]`` float32 batch of uniform [0, 1) images (the normalized range of real
    images); C = 2 (a ``noise_map`` model's input) adds the constant synthetic noise map."""
    n, channels, height, width = shape
    return synthetic_input(np.random.default_rng(seed).random((n, 1, height, width), dtype=np.float32), channels)
