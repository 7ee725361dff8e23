"""Real MR anatomy from the MNI152 T1 template that nilearn ships (``data.sources`` ``"atlas"``).

The packages hold no clean real MR image for training (docs/DATA.md: the real MR frames carry
1.6-4.5 % noise of their own and fail the clean-reference screen), so the MR training images were
phantoms only, and a model trained on them smooths away a real scan's fine anatomy at low noise.
The ICBM 2009a symmetric template (nilearn's packaged ``load_mni152_template``, 1 mm, no
download; skull-stripped: the brain alone on a zero background) is an average of 152 T1
scans: real gyri, sulci, ventricles and deep nuclei, with
almost no noise of its own. Axial slices only, from two slabs apart: the lower-middle brain trains
and the upper cortex validates, with a gap between them, so no validation slice's anatomy is in
training (sagittal or coronal slices would cross both slabs; the template is left-right
symmetric, so its hemispheres cannot split it either). None are test images.
"""

from __future__ import annotations

import numpy as np

# Axial slice ranges (template voxels, z; the brain spans 0-154 of 189): training from the
# temporal lobes to the lateral ventricles' roof, validation in the upper cortex, at least 12 mm apart.
TRAIN_SLAB = (24, 112)
VALIDATION_SLAB = (124, 144)
ATLAS_PIXEL_MM = 1.0
# The template's values are in [0, 1]; MR images are stored as integers of a few hundred to a few
# thousand, so the slices are scaled into that range (the normalization is relative anyway).
ATLAS_SCALE = 1000.0


def _template_volume() -> np.ndarray:
    """The 1 mm MNI152 T1 template as float32 (x, y, z), read from nilearn's package data."""
    try:
        from nilearn.datasets import load_mni152_template  # noqa: PLC0415 (heavy import, atlas runs only)
    except ImportError as error:
        raise RuntimeError("data source 'atlas' needs nilearn (pip install -e '.[data]')") from error
    return np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)


def slab_indices(slab: tuple[int, int], count: int) -> list[int]:
    """``count`` evenly spaced axial indices in ``[slab[0], slab[1])`` (distinct, ascending)."""
    low, high = slab
    if not 0 <= count <= high - low:
        raise ValueError(f"atlas slice count {count} must be in [0, {high - low}] for slab {slab}")
    return sorted({int(z) for z in np.linspace(low, high, count, endpoint=False)})


def atlas_slices(train_count: int, validation_count: int) -> list[tuple[str, str, np.ndarray]]:
    """``(name, split, values)`` per axial slice: ``train_count`` training slices and
    ``validation_count`` validation ones, anterior up, in MR-like units (``ATLAS_SCALE``)."""
    if train_count == 0 and validation_count == 0:
        return []
    volume = _template_volume()
    slices = []
    for split, slab, count in (("train", TRAIN_SLAB, train_count), ("validation", VALIDATION_SLAB, validation_count)):
        for z in slab_indices(slab, count):
            values = np.ascontiguousarray(np.rot90(volume[:, :, z])) * np.float32(ATLAS_SCALE)
            slices.append((f"mni152-t1-z{z:03d}", split, values.astype(np.float32)))
    return slices
