"""Fuzzing the CLI: a few hundred seeded mutants of real DICOM files in ONE run.

Header byte flips, truncations at random offsets, VR and length corruptions of pydicom's
CT_small and MR_small, pydicom-data's RLE and big-endian enhanced MR, and an RT plan (a
non-image). The run must go through all of them: exit 1, exactly one line per file, no
traceback, no patient data, inputs untouched, and no partial or temporary file left.
"""

from __future__ import annotations

import re

import pydicom
import pytest
from runtime_fixtures import file_hashes, make_smoothing_model, pydicom_file, run_cli
from runtime_mutants import write_mutants

SOURCES = ("CT_small.dcm", "MR_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm", "rtplan.dcm")
PER_SOURCE = 60  # 300 mutants; about 10 s on two cores
SECRET = "Fuzzsecret^Patientname"
LINE = re.compile(r"^medclear: (enhanced|skipped|FAILED) (\S+): \S")


def _sources(folder):
    """The sources re-saved with a sentinel patient name (and their own encoding)."""
    folder.mkdir(parents=True)
    paths = []
    for name in SOURCES:
        try:
            ds = pydicom.dcmread(pydicom_file(name))
        except FileNotFoundError:
            pytest.skip(f"{name} not installed (pydicom-data)")
        ds.PatientName = SECRET
        ds.save_as(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    model = make_smoothing_model(root / "model.onnx")
    inputs = root / "in"
    for seed, source in enumerate(_sources(root / "sources")):
        write_mutants(source, inputs, PER_SOURCE, seed)
    before = file_hashes(sorted(inputs.iterdir()))
    result = run_cli(str(inputs), "-o", str(root / "out"), "--model", str(model), "-q", timeout=300)
    return result, before, root / "out"


def test_every_mutant_gets_exactly_one_line_and_the_run_goes_on(fuzz_run):
    result, before, _ = fuzz_run
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)][:5]
    named = [LINE.match(line).group(2) for line in lines]
    assert sorted(named) == sorted(str(path) for path in before), "a file has no line, or more than one"
    counts = re.search(r"(\d+) done, (\d+) skipped, (\d+) failed", result.stdout)
    done, skipped, failed = map(int, counts.groups())
    assert done + skipped + failed == len(before) == len(SOURCES) * PER_SOURCE
    assert failed == sum(line.startswith("medclear: FAILED") for line in lines) > 0
    assert done > 0  # some mutants only touch unimportant bytes


def test_inputs_untouched_no_patient_data_no_partial_files(fuzz_run):
    result, before, out = fuzz_run
    assert file_hashes(before) == before
    assert SECRET not in result.stderr + result.stdout and "Fuzzsecret" not in result.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith(".medclear-tmp-")]
    for path in written:  # every output is a whole, readable image
        assert pydicom.dcmread(path).pixel_array.size > 0, path
