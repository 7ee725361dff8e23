"""The enhanced image as a conformant derived DICOM instance (PS3.3 C.7.6.1, C.12.4, C.7.3.1).

Patient, study, frame of reference and geometry stay those of the source (a super-resolution
output: the same area on a finer grid, ``runtime.geometry``). The instance gets new SOP
Instance and Series Instance UIDs (a new series beside the source's), Image Type
DERIVED\\SECONDARY, a Derivation Description and Code (CID 7203 "Smoothing": denoising is a
smoothing operation; "Spatial resampling" for super-resolution), a Source Image Sequence
(purpose: "Source image for image processing operation") and a Contributing Equipment item
(purpose: "Modifying Equipment"). Enhanced
multi-frame objects keep their functional groups and carry the derivation in the shared
Derivation Image Sequence. Pixels are stored in the source's encoding (bit depth,
representation, rescale, padding) and written uncompressed in Explicit VR Little Endian.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    ExplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    generate_uid,
)

from runtime.geometry import upscale_geometry
from runtime.pixels import PixelEncoding

MANUFACTURER = "medclear"
DERIVATION_CODE = codes.cid7203.Smoothing  # (113087, DCM, "Smoothing")
SR_DERIVATION_CODE = codes.cid7203.SpatialResampling  # (113085, DCM, "Spatial resampling")
SOURCE_PURPOSE = codes.DCM.SourceImageForImageProcessingOperation  # (121322, DCM)
EQUIPMENT_PURPOSE = codes.DCM.ModifyingEquipment  # (109103, DCM)
SERIES_NUMBER_OFFSET = 1000
# Transfer syntaxes whose decoded pixels may differ from what was acquired (PS3.5 8.2).
LOSSY_SYNTAXES = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}
# Attributes describing the old pixel stream that would be wrong for the new one.
STALE_PIXEL_KEYWORDS = (
    "SmallestImagePixelValue", "LargestImagePixelValue", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths", "PixelDataProviderURL", "FloatPixelData", "DoubleFloatPixelData",
)
ENHANCED_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# Multi-frame IODs built from functional groups; their Image Type value 2 stays as acquired.
ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA
    "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
}
# MR Pulse Sequence / Bulk Motion attributes that Enhanced MR allows only on ORIGINAL or
# MIXED images (dciodvfy rejects them on DERIVED ones): they describe the acquisition.
ORIGINAL_ONLY_MR = (
    "PulseSequenceName", "MRAcquisitionType", "EchoPulseSequence", "MultipleSpinEcho",
    "MultiPlanarExcitation", "PhaseContrast", "TimeOfFlightContrast", "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence", "EchoPlanarPulseSequence", "SaturationRecovery",
    "SpectrallySelectedSuppression", "OversamplingPhase", "GeometryOfKSpaceTraversal",
    "RectilinearPhaseEncodeReordering", "SegmentedKSpaceTraversal", "CoverageOfKSpace",
    "NumberOfKSpaceTrajectories", "BulkMotionCompensationTechnique", "BulkMotionSignalSource",
)
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


DESCRIPTION_LIMIT = 1024  # Derivation Description is ST (PS3.5 6.2)
CONTRIBUTION_LIMIT = 64


@dataclass(frozen=True)
class Derivation:
    """Who derived the image and how: enters Derivation Description and Contributing Equipment."""

    description: str  # the same for every file of a run (also the Contribution Description)
    software_version: str
    model_name: str
    model_id: str  # distinguishes models: different models give different derived series
    parameters: str = ""  # this file's own facts (estimated noise, strength), appended
    scale: int = 1  # super-resolution: output rows and columns per input one

    @property
    def code(self):
        """CID 7203: Smoothing (denoising), or Spatial resampling (super-resolution)."""
        return DERIVATION_CODE if self.scale == 1 else SR_DERIVATION_CODE

    def derivation_description(self) -> str:
        """``description; parameters``, within Derivation Description's 1024 characters."""
        text = f"{self.description}; {self.parameters}" if self.parameters else self.description
        return text[:DESCRIPTION_LIMIT]


def series_description(original: str, derivation: Derivation) -> str:
    """``<original> medclear enhanced (<model> <id>)``: says the series was enhanced and by
    which model (name and the first 8 digits of its id); LO, so at most 64 characters, the
    original's start giving way first."""
    model = f"{derivation.model_name[:24]} {derivation.model_id[:8]}".strip()
    tag = f"medclear enhanced ({model})" if model else "medclear enhanced"
    return f"{original.strip()} {tag}".strip()[-64:]


def derived_uid(*parts: str) -> UID:
    """A UID that is a pure function of ``parts`` (re-runs give the same series / instance)."""
    return generate_uid(entropy_srcs=["medclear", *parts])


def _code_item(code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _derived_type(value, keep_second: bool) -> list[str]:
    """Image/Frame Type with value 1 DERIVED and value 2 SECONDARY, remaining values kept."""
    values = [value] if isinstance(value, str) else [str(v) for v in value or []]
    values = [v for v in values if v] or ["DERIVED", "SECONDARY"]
    values += [""] * (2 - len(values))
    values[0] = "DERIVED"
    if not keep_second:
        values[1] = "SECONDARY"
    return values


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [_code_item(SOURCE_PURPOSE)]
    return item


def _equipment(derivation: Derivation, now: datetime.datetime) -> Dataset:
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [_code_item(EQUIPMENT_PURPOSE)]
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = derivation.model_name[:64]
    item.SoftwareVersions = derivation.software_version[:64]
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = derivation.description[:CONTRIBUTION_LIMIT]
    return item


def source_was_lossy(source: Dataset) -> bool:
    """Whether the source's pixels already went through lossy compression."""
    meta = getattr(source, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else None
    return str(source.get("LossyImageCompression", "")).strip() == "01" or syntax in LOSSY_SYNTAXES


def _mark_lossy(ds: Dataset, source: Dataset) -> None:
    if not source_was_lossy(source):
        return
    ds.LossyImageCompression = "01"
    meta = getattr(source, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else None
    if "LossyImageCompressionMethod" not in ds and syntax in LOSSY_SYNTAXES:
        ds.LossyImageCompressionMethod = LOSSY_SYNTAXES[syntax]


def _set_pixels(ds: Dataset, stored: np.ndarray, encoding: PixelEncoding) -> None:
    for keyword in STALE_PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    array = np.ascontiguousarray(stored, dtype=encoding.numpy_dtype.newbyteorder("<"))
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = encoding.bits_allocated
    ds.BitsStored = encoding.bits_stored
    ds.HighBit = encoding.bits_stored - 1
    ds.PixelRepresentation = 1 if encoding.signed else 0
    ds.PixelData = array.tobytes()
    ds["PixelData"].VR = "OB" if encoding.bits_allocated <= 8 else "OW"


def is_enhanced(ds: Dataset) -> bool:
    """Whether ``ds`` is an enhanced (functional-group) multi-frame object."""
    return str(ds.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES or "SharedFunctionalGroupsSequence" in ds


def _evidence(source: Dataset) -> Dataset:
    """Source Image Evidence: the Hierarchical SOP Instance Reference to the source."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.get("SeriesInstanceUID", "")
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = source.get("StudyInstanceUID", "")
    study.ReferencedSeriesSequence = [series]
    return study


def _derive_enhanced(ds: Dataset, source: Dataset, derivation: Derivation) -> None:
    """Enhanced multi-frame: frame types DERIVED, derivation in the shared functional group.

    Source Image Evidence accompanies a Derivation Image functional group only; the IODs
    forbid it otherwise (PS3.3 C.8.13.1, C.8.15.2), e.g. on a source without functional groups.
    """
    if str(source.get("SOPClassUID", "")) == ENHANCED_MR:
        for keyword in ORIGINAL_ONLY_MR:
            if keyword in ds:
                del ds[keyword]
    for group_name in ENHANCED_GROUPS:
        for group in ds.get(group_name, []):
            for element in group:
                if element.keyword.endswith("FrameTypeSequence"):
                    for item in element.value:
                        if "FrameType" in item:
                            item.FrameType = _derived_type(item.FrameType, keep_second=True)
            if "DerivationImageSequence" in group:
                del group.DerivationImageSequence
    step = _derivation_items(Dataset(), source, derivation)
    if ds.get("SharedFunctionalGroupsSequence"):
        ds.SharedFunctionalGroupsSequence[0].DerivationImageSequence = [step]
        ds.SourceImageEvidenceSequence = [_evidence(source)]
    else:  # a malformed enhanced object without functional groups: keep the facts at top level
        _derivation_items(ds, source, derivation)


def _derivation_items(target: Dataset, source: Dataset, derivation: Derivation) -> Dataset:
    """Derivation Description, Derivation Code Sequence and Source Image Sequence on ``target``."""
    target.DerivationDescription = derivation.derivation_description()
    target.DerivationCodeSequence = [_code_item(derivation.code)]
    target.SourceImageSequence = [_source_reference(source)]
    return target


def derive(source: Dataset, stored: np.ndarray, encoding: PixelEncoding, derivation: Derivation) -> Dataset:
    """A new derived instance holding ``stored`` (frames, rows, cols) in ``source``'s encoding.

    ``source`` is not modified. With ``derivation.scale`` s > 1, ``stored`` has s times the
    source's rows and columns and the geometry is carried over (``runtime.geometry``;
    GeometryError where it cannot be).
    """
    ds = copy.deepcopy(source)
    now = datetime.datetime.now()
    series_uid = str(source.get("SeriesInstanceUID", ""))
    ds.SOPInstanceUID = derived_uid(str(source.SOPInstanceUID), derivation.model_id)
    ds.SeriesInstanceUID = derived_uid(series_uid, derivation.model_id)
    series_number = source.get("SeriesNumber")
    ds.SeriesNumber = (int(series_number) if series_number not in (None, "") else 0) + SERIES_NUMBER_OFFSET
    ds.SeriesDescription = series_description(str(source.get("SeriesDescription", "")), derivation)
    ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.SeriesDate, ds.SeriesTime
    enhanced = is_enhanced(source)
    # Enhanced CT/MR restrict Image Type value 2 to PRIMARY-style flavours; keep it there.
    ds.ImageType = _derived_type(source.get("ImageType", []), keep_second=enhanced)
    if enhanced:
        _derive_enhanced(ds, source, derivation)
    else:
        _derivation_items(ds, source, derivation)
    ds.ContributingEquipmentSequence = list(source.get("ContributingEquipmentSequence", [])) + [
        _equipment(derivation, now)
    ]
    _mark_lossy(ds, source)
    upscale_geometry(ds, derivation.scale)
    if tuple(stored.shape[-2:]) != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(f"pixels of shape {list(stored.shape)} do not fit {ds.Rows} x {ds.Columns} "
                         f"(source x{derivation.scale})")
    _set_pixels(ds, stored, encoding)
    ds.file_meta = _file_meta(ds)
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDCLEAR"
    return meta
