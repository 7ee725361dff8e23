"""Write a degraded image back as a DICOM file of its source, for samples and end-to-end tests.

The pixels are replaced (in the source's encoding, uncompressed), the image may be a centered
crop of the source (Rows/Columns follow), and the instance gets new UIDs and a synthetic
patient identity, so it never passes for the original.
"""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


from runtime.pixels import from_modality, read_encoding


def degraded_dataset(source: Dataset, values: np.ndarray, description: str) -> Dataset:
    """A copy of single-frame ``source`` whose pixels are ``values`` (modality values, e.g. HU;
    the source's shape or a centered crop of it); ``description`` goes to Image Comments."""
    rows, cols = int(source.Rows), int(source.Columns)
    height, width = values.shape
    if height > rows or width > cols:
        raise ValueError(f"image {values.shape} is larger than its source ({rows}, {cols})")
    ds = copy.deepcopy(source)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    encoding = read_encoding(ds)
    ds.Rows, ds.Columns = height, width
    ds.PixelData = from_modality(values, encoding).astype(encoding.numpy_dtype).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageComments = description
    ds.PatientName = "Sample^Degraded"
    ds.PatientID = "MEDCLEAR-SAMPLE"
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):  # may no longer hold
        if keyword in ds:
            delattr(ds, keyword)
    return ds
