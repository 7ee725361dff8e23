"""Every packaged real DICOM file through `python -m runtime.enhance` with the fixture model.

One CLI run over the test files of pydicom, pydicom-data and deid-data (offline_dicom_files()); then, per
file, an image-bearing greyscale source must have an output that adds no dciodvfy error to its
source's own and that dcentvfy finds consistent with it; every other file is skipped here with
the runtime's own reason, which must be one of the expected "not enhanceable" causes.
"""

from __future__ import annotations

import re
import subprocess
import warnings

import pydicom
import pytest
from runtime_fixtures import baseline_copy, make_smoothing_model, new_errors, run_cli

from runtime.inputs import discover
from trainer.data.offline import offline_dicom_files

pytestmark = [
    pytest.mark.slow,
    pytest.mark.dicom3tools,
]
FILES = offline_dicom_files()
OUTPUT_OF = {job.source: job for job in discover(FILES)[0]}  # the same naming the CLI uses
NOT_ENHANCEABLE = re.compile(
    r"no pixel data|not greyscale|Bits Allocated 1 is|not a DICOM file|DICOMDIR|truncated|cannot decode"
    r"|malformed image dimensions|invalid image dimensions|Modality LUT Sequence is not supported"
)


def _greyscale_image(path) -> bool:
    """Independent of the runtime: does pydicom see a decodable greyscale image here?"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            ok = "PixelData" in ds and str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME")
            return ok and int(ds.get("BitsAllocated", 0)) in (8, 16, 32) and ds.pixel_array.size > 0
        except Exception:
            return False


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    model = make_smoothing_model(root / "model.onnx")
    result = run_cli(*map(str, FILES), "-o", str(root / "out"), "--model", str(model), "--tile", "512",
                     "--batch", "4", "-q", timeout=600)
    reasons = {}
    for line in result.stderr.splitlines():
        match = re.match(r"medclear: (FAILED|skipped) (.+?): (.*)$", line)
        if match:
            reasons[match.group(2)] = f"{match.group(1)}: {match.group(3)}"
    return result, root / "out", reasons


def test_sweep_summary(sweep):
    result, _, _ = sweep
    assert "Traceback" not in result.stderr
    done = int(re.search(r"(\d+) done", result.stdout).group(1))
    assert done >= 80, result.stdout  # 83 greyscale images in pydicom 3.0 + pydicom-data


@pytest.mark.parametrize("source", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_each_offline_file(sweep, source):
    result, out, reasons = sweep
    if source not in OUTPUT_OF:
        pytest.skip("a DICOMDIR given as input: expanded into the files it references")
    output = OUTPUT_OF[source].output(out, "dicom")
    if str(source) in reasons:
        reason = reasons[str(source)]
        assert NOT_ENHANCEABLE.search(reason), reason
        assert not _greyscale_image(source) or re.search("truncated|cannot decode|Modality LUT", reason), reason
        pytest.skip(f"not enhanced: {reason}")
    assert output.is_file(), f"{source}: no output and no reason given"
    assert new_errors(source, output) == set()
    baseline = baseline_copy(source, output.parent)
    check = subprocess.run(["dcentvfy", str(baseline), str(output)], capture_output=True, text=True)
    assert [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")] == []
