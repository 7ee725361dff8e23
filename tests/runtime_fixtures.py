"""Small ONNX models and DICOM files for the runtime tests (no trained model needed)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract


def smoothing_kernel(strength: float = 0.5) -> np.ndarray:
    """3x3 kernel k such that ``x + conv(x, k)`` = (1 - strength) x + strength * box3(x)."""
    kernel = np.full((3, 3), strength / 9.0, dtype=np.float32)
    kernel[1, 1] -= strength
    return kernel.reshape(1, 1, 3, 3)


def make_smoothing_model(
    path: Path, size_multiple: int = 8, contract: ModelContract | None = None, strength: float = 0.5,
    channels: int | None = None,
) -> Path:
    """A tiny denoiser: ``enhanced = image + Conv3x3(image)`` (receptive field 3x3).

    Input ``image`` [N, C, H, W] with dynamic N, H, W; the medclear contract in metadata_props.
    C is the contract's ``input_channels`` unless ``channels`` says otherwise; with two
    channels (a ``noise_map`` model) ``enhanced = image + Conv3x3(image) + noise map``, so the
    output minus :func:`reference_smoothing` of the image is the level the model was given.
    """
    contract = contract or ModelContract(size_multiple=size_multiple, model_name="test-smoothing", modalities=("*",))
    channels = contract.input_channels if channels is None else channels
    if channels == 1:
        weight = numpy_helper.from_array(smoothing_kernel(strength), name="weight")
        nodes = [helper.make_node("Conv", [INPUT_NAME, "weight"], ["detail"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
                 helper.make_node("Add", [INPUT_NAME, "detail"], [OUTPUT_NAME])]
    else:  # one conv: the image's residual smoothing (identity folded in) plus the map's centre tap
        kernel = np.zeros((1, channels, 3, 3), dtype=np.float32)
        kernel[0, 0] = smoothing_kernel(strength)[0, 0]
        kernel[0, :2, 1, 1] += 1.0
        weight = numpy_helper.from_array(kernel, name="weight")
        nodes = [helper.make_node("Conv", [INPUT_NAME, "weight"], [OUTPUT_NAME], pads=[1, 1, 1, 1],
                                  kernel_shape=[3, 3])]
    graph = helper.make_graph(
        nodes,
        "medclear_test_smoothing",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", channels, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def reference_smoothing(image: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """What the fixture model computes on one [H, W] image (zero padding), in numpy."""
    padded = np.pad(image.astype(np.float64), 1)
    box = sum(
        padded[dy : dy + image.shape[0], dx : dx + image.shape[1]] for dy in range(3) for dx in range(3)
    ) / 9.0
    return ((1 - strength) * image + strength * box).astype(np.float32)


def dciodvfy_errors(path: Path) -> set[str]:
    """The distinct ``Error`` lines dicom3tools' dciodvfy reports for a file."""
    import subprocess

    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return {line.strip() for line in lines if line.strip().startswith("Error")}


def new_errors(source: Path, output: Path) -> set[str]:
    """dciodvfy errors of ``output`` that its ``source`` does not already have."""
    source_errors = dciodvfy_errors(baseline_copy(source, output.parent))
    return {line for line in dciodvfy_errors(output) if not inherited(line, source_errors)}


def inherited(line: str, source_errors: set[str]) -> bool:
    """An output error is the source's own if the source reports the same error (message,
    element and module alike, only true values masked), or reports the same bad value.

    A bad value copied from the source (e.g. an invalid SOP Instance UID that the output must
    reference) is reported under the referencing attribute's name in the output. Element,
    module and attribute names are never values: a new error in a module where the source
    already has a different one is new.
    """
    if line in source_errors:
        return True
    if error_key(line) in {error_key(error) for error in source_errors}:
        return True
    source_values = {value for error in source_errors for value in true_values(error)}
    return any(len(value) >= 8 and value in source_values for value in true_values(line))


# <...> after these words names an element, module, macro or attribute; any other <...> or
# "..." in a dciodvfy line is a value.
_NAME = re.compile(r'(?:Element=|Module=|Macro=|attribute )<[^<>]*>')
_VALUE = re.compile(r'<[^<>]*>|"[^"]*"')


def true_values(line: str) -> list[str]:
    """The values (not names) quoted in a dciodvfy line."""
    return [match.group(0)[1:-1] for match in _VALUE.finditer(_NAME.sub("", line))]


def error_key(line: str) -> str:
    """A dciodvfy line with its values masked and its names kept."""
    names = _NAME.findall(line)
    masked = _VALUE.sub("<value>", _NAME.sub("\x00", line))
    for name in names:
        masked = masked.replace("\x00", name, 1)
    return masked


def baseline_copy(source: Path, folder: Path) -> Path:
    """``source`` itself, or for deflated files (dciodvfy cannot read them) an inflated copy."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    ds = pydicom.dcmread(source)
    if ds.file_meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian:
        return source
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    copy = folder / (source.name + ".inflated.dcm")
    ds.save_as(copy, enforce_file_format=True)
    return copy


REPO = Path(__file__).resolve().parents[1]


def pydicom_file(name: str) -> Path:
    """A file from pydicom's or pydicom-data's packaged test files, by name."""
    from trainer.data.offline import offline_dicom_dirs

    for folder in offline_dicom_dirs():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(name)


def run_cli(*args: str, env: dict | None = None, timeout: float = 120):
    """``python -m runtime.enhance ARGS`` in a subprocess from the repository root."""
    import os
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runtime.enhance", *args], cwd=REPO, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def file_hashes(paths) -> dict[Path, str]:
    """sha256 of each file, to prove inputs are never modified."""
    import hashlib

    return {Path(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def make_xray(path: Path, modality: str, photometric: str, rows: int = 600, cols: int = 520) -> Path:
    """A CR or DX radiograph cut from pydicom-data's CR ``RG3_J2KR.dcm`` (MONOCHROME1, 10 bits).

    ``photometric`` MONOCHROME2 inverts the stored values; ``modality`` DX turns it into a DX
    For Presentation image with the DX modules' attributes, so dciodvfy accepts it.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(pydicom_file("RG3_J2KR.dcm"))
    stored = ds.pixel_array[500 : 500 + rows, 600 : 600 + cols].astype(np.uint16)
    if photometric != ds.PhotometricInterpretation:
        stored = ((1 << int(ds.BitsStored)) - 1 - stored).astype(np.uint16)
    ds.PixelData, ds.Rows, ds.Columns = stored.tobytes(), rows, cols
    ds["PixelData"].VR = "OW"
    ds.PhotometricInterpretation = photometric
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[modality, photometric, str(rows), str(cols)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if modality == "DX":
        _to_dx(ds, photometric)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _to_dx(ds, photometric: str) -> None:
    """CR -> DX For Presentation: the DX Series, Anatomy, Image, Detector and Positioning modules."""
    ds.Modality = "DX"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageLaterality = ds.Laterality
    for keyword in ("Laterality", "BodyPartExamined", "PlateType", "PhosphorType", "CassetteOrientation",
                    "CassetteSize", "Sensitivity", "AcquisitionDeviceProcessingDescription",
                    "AcquisitionDeviceProcessingCode"):
        if keyword in ds:
            del ds[keyword]
    ds.AnatomicRegionSequence, ds.AcquisitionContextSequence, ds.PositionerType = [], [], ""
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [0.2, 0.2]


def copy_file(name: str, folder: Path, new_name: str | None = None) -> Path:
    """A packaged test file (``pydicom_file(name)``) copied into ``folder``."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(pydicom_file(name), folder / (new_name or name)))
