"""The dciodvfy comparison behind every conformance test: an output error counts as the
source's own only if the source has that very error (names compared, values masked)."""

from __future__ import annotations

import pydicom
import pytest

from runtime_fixtures import error_key, inherited, new_errors, pydicom_file, true_values

LATERALITY = "Error - Missing attribute Type 2C Conditional Element=<Laterality> Module=<GeneralSeries>"
SERIES_UID = "Error - Missing attribute Type 1 Required Element=<SeriesInstanceUID> Module=<GeneralSeries>"
BAD_UID = "Error - Value invalid for this VR - (0x0020,0x000e) UI Series Instance UID  UI [1] = <abc123456789> - x"


def test_names_are_not_values():
    assert true_values(LATERALITY) == []
    assert true_values(BAD_UID) == ["abc123456789"]
    assert error_key(BAD_UID).endswith("= <value> - x") and "Module=<GeneralSeries>" in error_key(SERIES_UID)


def test_a_new_error_in_a_module_that_already_has_one_is_new():
    assert not inherited(SERIES_UID, {LATERALITY})
    assert inherited(LATERALITY, {LATERALITY})


def test_a_copied_bad_value_is_inherited_under_another_name():
    referenced = "Error - Value invalid for this VR - (0x0008,0x1155) UI Referenced SOP Instance UID = <abc123456789>"
    assert inherited(referenced, {BAD_UID})
    assert not inherited(referenced.replace("abc123456789", "zzz987654321"), {BAD_UID})


@pytest.mark.dicom3tools
def test_planted_error_in_an_already_erroneous_module_is_caught(tmp_path):
    """JPEG-lossy.dcm already lacks Laterality (GeneralSeries); deleting its Series Instance UID
    is a new GeneralSeries error and must be reported."""
    source = pydicom_file("JPEG-lossy.dcm")
    ds = pydicom.dcmread(source)
    del ds.SeriesInstanceUID
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    assert SERIES_UID in new_errors(source, broken)
