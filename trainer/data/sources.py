"""Clean source images: packaged real DICOM, user directories and phantoms.

Every source yields :class:`SourceImage` records (one per frame) in modality values, each
with a ``group`` key for the held-out rule (trainer/data/split.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from skimage.transform import resize

from runtime.image_contract import modality_image
from runtime.pixels import modality_range
from trainer.data.atlas import ATLAS_PIXEL_MM, atlas_slices
from trainer.data.invesalius import head_slices
from trainer.data.natural import NATURAL_PIXEL_MM, NATURAL_SCALE, TRAIN_PHOTOS, ct_slice, natural_photos, photo
from trainer.data.offline import offline_dicom_entries
from trainer.data.pairing import pair_series
from trainer.data.phantoms import (
    HEAD_FOV_RANGE_MM,
    RADIOGRAPH_FIELD_MM,
    air_structure,
    mr_contrast,
    phantom_pixel_mm,
    random_fov_mm,
    random_head_phantom,
    random_phantom,
    random_radiograph,
    shepp_logan_hu,
    tissue_texture,
)

log = logging.getLogger(__name__)

DEFAULT_PIXEL_MM = 0.7  # when a file states no pixel spacing
SCANNED_SOURCES = ("offline", "dir", "paired", "invesalius")  # SourceImage.scanned
NEAR_DUPLICATE_CORRELATION = 0.99
_LOSSLESS_SYNTAXES = {
    uid.JPEG2000Lossless,
    uid.JPEG2000MCLossless,
    uid.JPEGLSLossless,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.RLELossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
}


@dataclass
class SourceImage:
    """One clean 2-D slice in modality values (HU for CT), with its provenance."""

    name: str  # stable id, e.g. "offline:pydicom-data/693_J2KR.dcm#0" or "phantom:train-3"
    modality: str
    values: np.ndarray  # float32 (rows, columns)
    pixel_mm: float
    group: str  # held-out rule key: all copies/frames of one image share it
    source: str  # "offline", "phantom", "atlas", "natural", "natural_ct", "invesalius", "dir", "paired"
    low_dose: np.ndarray | None = None  # a real low-dose partner (paired directories)
    low_dose_label: str | None = None
    # The values its file can hold (a DICOM file's stored range in modality values; a synthetic
    # radiograph's saturating detector), or None: unbounded. Degraded radiographs are clipped to
    # it when data.clip_xray_to_detector is set, as writing them to a file would.
    detector_range: tuple[float, float] | None = None

    @property
    def scanned(self) -> bool:
        """From one real scan (packaged, a user's folder or a dose pair): it carries that scan's
        own noise, and data.real_image_share counts it. Phantoms, the averaged MR template and
        photographs do not."""
        return self.source in SCANNED_SOURCES


@dataclass
class _Frame:
    label: str  # "pydicom-data/693_J2KR.dcm"
    frame: int
    modality: str
    values: np.ndarray
    pixel_mm: float
    lossless: bool
    series: str
    position: tuple[float, ...] | None
    detector_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.values.tobytes()).digest()
        self.thumbnail = _thumbnail(self.values)


def pixel_spacing_mm(ds: Dataset) -> float:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = ds.get(keyword)
        if spacing and float(spacing[0]) > 0:
            return float(spacing[0])
    return DEFAULT_PIXEL_MM


def _is_lossless(ds: Dataset) -> bool:
    if str(ds.get("LossyImageCompression", "00")).strip() == "01":
        return False
    syntax = uid.UID(str(ds.file_meta.get("TransferSyntaxUID", uid.ExplicitVRLittleEndian)))
    return not syntax.is_compressed or syntax in _LOSSLESS_SYNTAXES


def _header_ok(ds: Dataset, modalities: tuple[str, ...], min_side: int) -> bool:
    return (
        str(ds.get("Modality", "")).upper() in modalities
        and min(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) >= min_side
    )


def read_frames(path: Path, label: str, modalities: tuple[str, ...], min_side: int) -> list[_Frame]:
    """Decode the frames of one DICOM file; [] when it is not a wanted greyscale image."""
    try:
        with warnings.catch_warnings():  # packaged test files are deliberately odd; say it once below
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True)
            if not _header_ok(header, modalities, min_side):
                return []
            ds = pydicom.dcmread(path)
            values, encoding, _ = modality_image(ds)
            detector_range = modality_range(encoding)
            position, series = ds.get("ImagePositionPatient"), str(ds.get("SeriesInstanceUID", ""))
    except Exception as error:  # unreadable, non-image or unsupported files are skipped
        log.debug("skipping %s: %s", label, error)
        return []
    return [
        _Frame(
            label=label,
            frame=index,
            modality=encoding.modality,
            values=np.ascontiguousarray(frame, dtype=np.float32),
            pixel_mm=pixel_spacing_mm(ds),
            lossless=_is_lossless(ds),
            series=series,
            position=tuple(round(float(v), 2) for v in position) if position else None,
            detector_range=detector_range,
        )
        for index, frame in enumerate(values)
    ]


def _thumbnail(values: np.ndarray) -> np.ndarray:
    step = max(1, min(values.shape) // 128)  # decimate first: resizing 2k images is slow
    small = values[::step, ::step]
    low, high = np.percentile(small, [1, 99])
    thumb = resize((small - low) / max(high - low, 1e-6), (32, 32), anti_aliasing=True)
    return (thumb - thumb.mean()) / max(float(thumb.std()), 1e-6)


def _same_image(a: _Frame, b: _Frame) -> bool:
    """Copies of one slice: same series and position, or same shape and near-equal content."""
    if a.modality != b.modality:
        return False
    if a.series and a.series == b.series and a.position is not None and a.position == b.position:
        return True
    if a.values.shape != b.values.shape:
        return False
    if a.digest == b.digest:
        return True
    return float(np.mean(a.thumbnail * b.thumbnail)) > NEAR_DUPLICATE_CORRELATION


def group_frames(frames: list[_Frame], prefix: str) -> list[SourceImage]:
    """De-duplicate frames into images: one representative per group of copies.

    Frames of one file share a group; copies (other transfer syntaxes, lossy versions,
    crops) join it. The representative of a copy set is a lossless one, then the largest,
    then the first by name; the group key is ``prefix`` + the first member label by name.
    """
    parent = list(range(len(frames)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(frames):
        for j in range(i + 1, len(frames)):
            b = frames[j]
            if a.label == b.label or _same_image(a, b):
                parent[find(j)] = find(i)
    groups: dict[int, list[_Frame]] = {}
    for i, frame in enumerate(frames):
        groups.setdefault(find(i), []).append(frame)
    images: list[SourceImage] = []
    for members in groups.values():
        key = f"{prefix}:{min(m.label for m in members)}"
        # Distinct slices of a group are the frames of its file(s); the rest are copies.
        copies: dict[int, list[_Frame]] = {}
        for m in members:
            copies.setdefault(m.frame, []).append(m)
        for same in copies.values():
            best = sorted(same, key=lambda m: (not m.lossless, -m.values.size, m.label))[0]
            images.append(
                SourceImage(
                    f"{prefix}:{best.label}#{best.frame}", best.modality, best.values, best.pixel_mm, key, prefix,
                    detector_range=best.detector_range,
                )
            )
    return sorted(images, key=lambda image: image.name)


@lru_cache(maxsize=4)
def offline_images(modalities: tuple[str, ...], min_side: int) -> tuple[SourceImage, ...]:
    """The de-duplicated real images shipped in pydicom and pydicom-data (cached per process)."""
    frames: list[_Frame] = []
    for label, path in offline_dicom_entries():
        frames += read_frames(path, label, modalities, min_side)
    images = group_frames(frames, "offline")
    for image in images:
        image.values.setflags(write=False)
    return tuple(images)


def directory_images(root: str | Path, modalities: tuple[str, ...], min_side: int) -> list[SourceImage]:
    """Clean images from a user's folder of DICOM files (recursively; non-images skipped).

    The held-out group of a file is its folder (a series or patient stays on one side);
    files lying directly in ``root`` are split one by one.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data source directory does not exist")
    images: list[SourceImage] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        for frame in read_frames(path, relative, modalities, min_side):
            folder = path.parent.relative_to(root).as_posix()
            group = f"dir:{root.name}/{folder if folder != '.' else relative}"
            name = f"dir:{root.name}/{relative}#{frame.frame}"
            images.append(SourceImage(name, frame.modality, frame.values, frame.pixel_mm, group, "dir",
                                      detector_range=frame.detector_range))
    if not images:
        raise ValueError(f"{root}: no readable {'/'.join(modalities)} DICOM images of at least {min_side} pixels")
    return images


def _random_phantom_source(name: str, group: str, seed: list[int], size: int, modality: str,
                           texture: float = 0.0, air_hu: float = 0.0, flat: bool = False) -> SourceImage:
    """One random body phantom from ``seed``: HU for CT, under a random MR contrast for MR, with a
    fine tissue texture of relative RMS up to ``texture`` (MR: on the signal; CT: on the
    attenuation HU + 1000) and, CT only, structure of up to ``air_hu`` HU in its air
    (phantoms.air_structure), each from its own generator so that the phantom is otherwise
    unchanged; its field of view (so pixel size) drawn last from the same generator. ``flat``:
    without the smooth tissue texture (``random_phantom``)."""
    rng = np.random.default_rng(seed)
    values = random_phantom(size, rng, flat)
    if modality == "MR":
        values = mr_contrast(values, rng)
    if texture > 0:
        field = tissue_texture(values.shape, np.random.default_rng([*seed, 1]), texture)
        # MR: on the signal; CT: on the attenuation (HU + 1000), so air stays air in both.
        values = values * field if modality == "MR" else ((values + 1000.0) * field - 1000.0).astype(np.float32)
    if air_hu > 0 and modality == "CT":
        values = air_structure(values, np.random.default_rng([*seed, 2]), air_hu)
    pixel_mm = phantom_pixel_mm(size, random_fov_mm(rng))
    return SourceImage(f"phantom:{name}", modality, values, pixel_mm, f"{group}:phantom:{name}", "phantom")


def phantom_images(count: int, size: int, test_count: int, validation_count: int = 0,
                   train_texture: float = 0.0, train_air_hu: float = 0.0) -> list[SourceImage]:
    """Random phantoms by name: training ``phantom:train-i``, validation ``phantom:val-i``, and
    test: Shepp-Logan and ``phantom:heldout-i`` (groups ``train:`` / ``validation:`` / ``heldout:``).

    Random phantoms draw their field of view (body size, so pixel size) from
    ``PHANTOM_FOV_RANGE_MM``; Shepp-Logan keeps the fixed ``PHANTOM_FOV_MM``. ``train_texture``
    > 0 gives the training ones a fine tissue texture, ``train_air_hu`` > 0 structure in their air
    (validation and test stay as they were).
    """

    def make(name: str, group: str, seed: list[int], texture: float = 0.0, air_hu: float = 0.0) -> SourceImage:
        return _random_phantom_source(name, group, seed, size, "CT", texture, air_hu)

    # Separate seed streams ([7, 0, i] train, [7, 1, i] test, [7, 2, i] validation; [7, 3, i] the flat
    # training phantoms, flat_phantom_images) keep the sets distinct.
    images = [make(f"train-{i}", "train", [7, 0, i], train_texture, train_air_hu) for i in range(count)]
    images += [make(f"val-{i}", "validation", [7, 2, i]) for i in range(validation_count)]
    images.append(
        SourceImage("phantom:shepp-logan", "CT", shepp_logan_hu(size), phantom_pixel_mm(size),
                    "heldout:phantom:shepp-logan", "phantom")
    )
    images += [make(f"heldout-{i}", "heldout", [7, 1, i]) for i in range(test_count)]
    return images


def mr_phantom_images(count: int, size: int, validation_count: int = 0, texture: float = 0.0) -> list[SourceImage]:
    """Noiseless MR-like phantoms (random body phantoms under a random MR contrast, optionally
    with a fine tissue texture): training ``phantom:mr-train-i`` and validation ``phantom:mr-val-i``;
    none are test images."""

    def make(name: str, group: str, seed: list[int]) -> SourceImage:
        return _random_phantom_source(name, group, seed, size, "MR", texture)

    # Seed streams [8, 0, i] (train) and [8, 2, i] (validation), apart from the CT phantoms' [7, ...].
    images = [make(f"mr-train-{i}", "train", [8, 0, i]) for i in range(count)]
    return images + [make(f"mr-val-{i}", "validation", [8, 2, i]) for i in range(validation_count)]


def xray_phantom_images(
    count: int, size: int, validation_count: int = 0, train_saturated_share: float = 0.5,
) -> list[SourceImage]:
    """Noiseless radiograph phantoms (``phantoms.random_radiograph``, modality DX): training
    ``phantom:xray-train-i`` and validation ``phantom:xray-val-i``; none are test images.

    Even-numbered validation ones have a saturating detector: the open field (their lowest
    value) sits at the bottom of the range a file can hold, as in CR files whose direct-exposure
    border is stored at the range's end, so that noise there is clipped (``detector_range``).
    Training ones saturate at ``train_saturated_share`` of them, evenly spaced (0.5: the
    even-numbered ones)."""

    def make(name: str, group: str, seed: list[int], saturated: bool) -> SourceImage:
        rng = np.random.default_rng(seed)
        values = random_radiograph(size, rng)
        detector = (float(values.min()), float("inf")) if saturated else None
        return SourceImage(f"phantom:{name}", "DX", values, RADIOGRAPH_FIELD_MM / size,
                           f"{group}:phantom:{name}", "phantom", detector_range=detector)

    # Seed streams [9, 0, i] (train) and [9, 2, i] (validation), apart from the CT and MR phantoms'.
    def saturated(i: int) -> bool:  # does the evenly spaced pick land on image i?
        return math.ceil((i + 1) * train_saturated_share) > math.ceil(i * train_saturated_share)

    images = [make(f"xray-train-{i}", "train", [9, 0, i], saturated(i)) for i in range(count)]
    return images + [make(f"xray-val-{i}", "validation", [9, 2, i], i % 2 == 0) for i in range(validation_count)]


def flat_phantom_images(count: int, size: int) -> list[SourceImage]:
    """Piecewise-constant random CT body phantoms (no smooth tissue texture: what a QA phantom or
    Shepp-Logan shows) for training only, ``phantom:flat-train-i`` from their own seed stream
    ``[7, 3, i]``: neither validation nor test changes when they are added."""
    return [_random_phantom_source(f"flat-train-{i}", "train", [7, 3, i], size, "CT", flat=True) for i in range(count)]


def head_phantom_images(count: int, size: int, grain: bool = True, validation_count: int = 0) -> list[SourceImage]:
    """Noiseless CT head phantoms (``phantoms.random_head_phantom``, the training ones with or
    without their fine brain grain): training ``phantom:head-train-i`` (seed stream ``[10, 0, i]``)
    and validation ``phantom:head-val-i`` (``[10, 2, i]``, always with grain); never test, so the
    test split does not change when they are added."""

    def make(name: str, group: str, seed: list[int], with_grain: bool) -> SourceImage:
        rng = np.random.default_rng(seed)
        values = random_head_phantom(size, rng, with_grain)
        pixel_mm = float(rng.uniform(*HEAD_FOV_RANGE_MM)) / size
        return SourceImage(f"phantom:{name}", "CT", values, pixel_mm, f"{group}:phantom:{name}", "phantom")

    images = [make(f"head-train-{i}", "train", [10, 0, i], grain) for i in range(count)]
    return images + [make(f"head-val-{i}", "validation", [10, 2, i], True) for i in range(validation_count)]


def _split_by_name(source: str, pixel_mm: float, items: list[tuple[str, str, np.ndarray]]) -> list[SourceImage]:
    """MR ``SourceImage`` records ``SOURCE:NAME`` from ``(name, split, values)``, each in the split
    its name was given (group ``train:`` or ``validation:``, so never test)."""
    return [SourceImage(f"{source}:{name}", "MR", values, pixel_mm, f"{split}:{source}:{name}", source)
            for name, split, values in items]


def atlas_images(train_count: int, validation_count: int) -> list[SourceImage]:
    """Real MR anatomy: axial slices of the MNI152 T1 template (trainer/data/atlas.py), training
    ``atlas:mni152-t1-zNNN`` from one slab and validation from another; none are test images."""
    return _split_by_name("atlas", ATLAS_PIXEL_MM, atlas_slices(train_count, validation_count))


def natural_images() -> list[SourceImage]:
    """Photographs as MR-like images (trainer/data/natural.py), ``natural:NAME``, training and
    validation by name; none are test images."""
    return _split_by_name("natural", NATURAL_PIXEL_MM, natural_photos())


def natural_ct_images(size: int) -> list[SourceImage]:
    """The training photographs as CT slices in HU (trainer/data/natural.py), ``natural_ct:NAME``,
    training only: CT validation and test are unchanged by adding them. Body outline and field of
    view (so pixel size) from a seed stream of their own."""
    images = []
    for i, name in enumerate(TRAIN_PHOTOS):
        rng = np.random.default_rng([11, 0, i])
        values = ct_slice(photo(name) / NATURAL_SCALE, size, rng)
        images.append(SourceImage(f"natural_ct:{name}", "CT", values, phantom_pixel_mm(size, random_fov_mm(rng)),
                                  f"train:natural_ct:{name}", "natural_ct"))
    return images


def invesalius_images(count: int, upsample: int = 1) -> list[SourceImage]:
    """Real CT head slices from Debian's InVesalius example volume (trainer/data/invesalius.py),
    ``invesalius:cranium-zNNN``, upsampled ``upsample`` times, training only (one patient, one
    group): CT validation and test are unchanged by adding them. A scan: its own noise is matched
    when it is degraded."""
    slices, pixel_mm = head_slices(count, upsample)
    return [SourceImage(f"invesalius:{name}", "CT", values, pixel_mm, "train:invesalius:cranium", "invesalius")
            for name, values in slices]


def paired_images(
    low_dir: str | Path, full_dir: str | Path, modalities: tuple[str, ...], min_side: int
) -> list[SourceImage]:
    """Full-dose slices with their real low-dose partners (see trainer/data/pairing.py).

    The held-out group is the sub-folder (patient/series) of the pair, or the file at the top.
    """
    low_dir, full_dir = Path(low_dir), Path(full_dir)
    images: list[SourceImage] = []
    for pair in pair_series(low_dir, full_dir):
        relative = pair.full.relative_to(full_dir).as_posix()
        full = read_frames(pair.full, relative, modalities, min_side)
        low = read_frames(pair.low, pair.low.relative_to(low_dir).as_posix(), modalities, min_side)
        if not full and not low:
            continue  # not a wanted modality, or too small
        if len(full) != len(low) or any(f.values.shape != l.values.shape for f, l in zip(full, low)):
            raise ValueError(f"{pair.low}: its image does not match the shape/frames of {pair.full} ({pair.key})")
        group = f"paired:{full_dir.parent.name}/{pair.folder if pair.folder != '.' else relative}"
        for f, l in zip(full, low):
            images.append(
                SourceImage(
                    f"paired:{full_dir.name}/{relative}#{f.frame}", f.modality, f.values, f.pixel_mm, group, "paired",
                    low_dose=l.values, low_dose_label=f"{f.modality.lower()}_paired_{low_dir.name}",
                )
            )
    if not images:
        raise ValueError(f"{full_dir}: no paired {'/'.join(modalities)} images of at least {min_side} pixels")
    return images
