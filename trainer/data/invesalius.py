"""Real CT head anatomy from the InVesalius example project that Debian ships (``data.sources``
``"invesalius"``).

The packages hold five distinct real 512² CT slices, and the split leaves three for training (a
neck and two frames of one scan); the shipped model smooths away real head anatomy that neither
they nor the phantoms show (scalp layers, the skull's inner edge, sinus air cells, the structured
air around a head: docs/TRAINING.md, twenty-fifth session). Debian's ``invesalius-examples``
package (``apt-get install invesalius-examples``; GPL-2, like InVesalius) holds one real head CT
volume, "ProMED CT 0051": 108 axial slices of 256² at 0.957 mm, 1.5 mm apart, int16 HU,
standard dose (about 5 HU of its own noise in brain, like the packaged training slices).

An InVesalius project (``.inv3``) is a gzip-compressed tar holding ``main.plist`` (an Apple
property list: the matrix file's name, dtype, shape (z, y, x) and the spacing) and the raw
matrix. One patient is one group: the whole volume trains (group ``train:``), so validation and
test are unchanged by adding it.

The 256² matrix puts the scan's own noise at pixel scale: 3.7-6.7 HU by the runtime's fine-scale
estimate, where the packaged 512² slices read 0.7-1.5 HU. A reference that noisy teaches a
model to keep noise (the twenty-sixth session's first runs lost 0.5 dB on the phantoms). Upsampled
2x with cubic interpolation, the default, a slice is 512² at 0.479 mm, the pixel size of the
head validation and test slices, and its own noise lies below the new pixel scale: 0.9-1.3 HU
(a 5x5 high-pass in brain reads 3.3-4.3 HU, between 693_J2KR's 2.5 and bad_sequence's 4.7).
"""

from __future__ import annotations

import plistlib
import tarfile
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
from skimage.transform import rescale

INVESALIUS_PROJECT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
# A slice takes part when at least this share of it is denser than air (-500 HU): the volume's
# top slices hold a few cm² of vertex and the head holder only.
MIN_TISSUE_SHARE = 0.08


def _member(archive: tarfile.TarFile, name: str, path: Path) -> bytes:
    """The bytes of the archive member whose file name is ``name`` (projects keep it in a folder)."""
    for info in archive.getmembers():
        if info.isfile() and PurePosixPath(info.name).name == name:
            extracted = archive.extractfile(info)
            if extracted is not None:
                return extracted.read()
    raise ValueError(f"{path}: no {name} in this InVesalius project")


@lru_cache(maxsize=2)
def read_project(path: Path = INVESALIUS_PROJECT) -> tuple[np.ndarray, float]:
    """The CT volume of an InVesalius project as float32 HU (z, y, x), read-only, and its
    in-plane pixel size in mm."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(
            f"data source 'invesalius' needs Debian's invesalius-examples package "
            f"(apt-get install invesalius-examples): {path} not found"
        )
    try:
        with tarfile.open(path, "r:gz") as archive:
            main = plistlib.loads(_member(archive, "main.plist", path))
            matrix = main["matrix"]
            raw = _member(archive, PurePosixPath(matrix["filename"]).name, path)
    except (tarfile.TarError, plistlib.InvalidFileException, KeyError, OSError) as error:
        raise ValueError(f"{path}: not a readable InVesalius project ({error})") from error
    if str(main.get("modality", "CT")).upper() != "CT":
        raise ValueError(f"{path}: modality {main.get('modality')!r}, not CT")
    try:
        shape = tuple(int(n) for n in matrix["shape"])
        values = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]).newbyteorder("<"))
    except (TypeError, ValueError, KeyError) as error:  # a dtype numpy does not know, or a raw size not a multiple of it
        raise ValueError(f"{path}: matrix not readable as its stated dtype and shape ({error})") from error
    if len(shape) != 3 or values.size != int(np.prod(shape)):
        raise ValueError(f"{path}: matrix of {values.size} values does not fill its shape {shape}")
    volume = values.reshape(shape).astype(np.float32)
    volume.setflags(write=False)
    return volume, float(main["spacing"][0])


def head_slices(count: int, upsample: int = 1,
                path: Path = INVESALIUS_PROJECT) -> tuple[list[tuple[str, np.ndarray]], float]:
    """``count`` axial slices evenly spaced over those of the volume that hold enough tissue,
    as ``(name, HU)`` pairs (name ``cranium-zNNN``), each upsampled ``upsample`` times in plane
    (cubic), and their pixel size in mm."""
    if upsample < 1:
        raise ValueError(f"invesalius upsample factor {upsample} must be >= 1")
    volume, pixel_mm = read_project(path)
    tissue = np.flatnonzero((volume > -500).mean(axis=(1, 2)) >= MIN_TISSUE_SHARE)
    if not 0 <= count <= tissue.size:
        raise ValueError(f"invesalius slice count {count} must be in [0, {tissue.size}] for {path}")
    picks = sorted({int(tissue[i]) for i in np.linspace(0, tissue.size, count, endpoint=False).astype(int)})
    slices = [(f"cranium-z{z:03d}", _upsampled(volume[z], upsample)) for z in picks]
    return slices, pixel_mm / upsample


def _upsampled(values: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return np.ascontiguousarray(values)
    return rescale(values, factor, order=3, mode="reflect", anti_aliasing=False, preserve_range=True).astype(np.float32)
