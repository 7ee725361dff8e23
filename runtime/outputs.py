"""Writing results atomically: DICOM, PNG, NPY and the before/after preview.

Every file is written to a temporary name in its final folder and renamed into place with
``os.replace``, so a crash, a full disk or Ctrl-C never leaves a partial file under the final
name (and a re-run does not mistake one for finished work).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

TEMP_PREFIX = ".medclear-tmp-"
CT_DEFAULT_WINDOW = (40.0, 400.0)  # soft tissue: level, width (HU)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def staged(path: Path, mode: int | None = None) -> Iterator[Path]:
    """A temp file beside ``path`` for the block to write (and check): fsynced and renamed onto
    ``path`` when the block ends, removed if it raises, so ``path`` is either whole or untouched.
    ``mode``: the file's permissions (default: the usual ones under the umask; 0o600 for a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(descriptor)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temp, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp makes 0600
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], None], mode: int | None = None) -> None:
    """Call ``write(handle)`` on a temp file beside ``path``, fsync, then rename onto ``path``
    (``mode``: as :func:`staged`)."""
    with staged(path, mode) as temp, open(temp, "wb") as handle:
        write(handle)


def write_dicom(path: Path, ds: Dataset) -> None:
    """Save a derived dataset (Explicit VR Little Endian, with file meta) atomically."""
    for _ in ds.iterall():
        pass  # decode every raw element now, so a big-endian source re-encodes cleanly
    ds.set_original_encoding(False, True)
    atomic_write(path, lambda handle: dcmwrite(handle, ds, enforce_file_format=True))


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as .npy atomically."""
    atomic_write(path, lambda handle: np.save(handle, array))


def display_window(ds: Dataset, values: np.ndarray, modality: str) -> tuple[float, float]:
    """(low, high) modality values for display: the file's VOI window, CT soft tissue, or percentiles."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center not in (None, "") and width not in (None, ""):
        if float(width) > 0:
            return float(center) - float(width) / 2, float(center) + float(width) / 2
    if modality == "CT":
        level, width = CT_DEFAULT_WINDOW
        return level - width / 2, level + width / 2
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _first(value):
    return value[0] if isinstance(value, MultiValue) else value


def to_display(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Modality values -> uint8 grey levels within ``window``."""
    low, high = window
    scaled = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def montage(frames: np.ndarray) -> np.ndarray:
    """(F, H, W) -> one 2-D grid image (frames row by row), for multi-frame PNGs."""
    count, height, width = frames.shape
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = np.zeros((rows * height, columns * width), dtype=frames.dtype)
    for index, frame in enumerate(frames):
        r, c = divmod(index, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = frame
    return grid


def write_png(path: Path, image: np.ndarray, text: dict[str, str] | None = None, *, compress: bool = True) -> None:
    """Save a 2-D uint8 image as PNG atomically (Pillow), with optional text chunks.
    ``compress=False`` stores the pixels uncompressed: the file size then depends only on the
    image's shape, not on its content (a blinded reader study must not leak which image is smoother)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    options = {} if compress else {"compress_level": 0}
    atomic_write(path, lambda handle: Image.fromarray(image).save(handle, format="PNG", pnginfo=info, **options))


def write_json(path: Path, record: dict) -> None:
    """Save plain data as JSON atomically."""
    atomic_write(path, lambda handle: handle.write((json.dumps(record, indent=2, sort_keys=True) + "\n").encode()))


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """uint8 images of one shape next to each other, white gaps between them."""
    spacer = np.full((images[0].shape[0], gap), 255, dtype=np.uint8)
    parts = [part for image in images for part in (spacer, image)][1:]
    return np.concatenate(parts, axis=1)
