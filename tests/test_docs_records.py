"""Measured numbers in the docs are generated from the JSON records in the repository: each
generated section must still be exactly what its record renders to, so a record cannot be
remeasured without the docs following (``python -m benchmarks.markdown RECORD --into DOC``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.markdown import main, read_marked_section, render, section_name, write_marked_section

REPO = Path(__file__).resolve().parents[1]
# (document, record): the document holds the record's tables between the record's markers.
GENERATED = [
    ("docs/BENCHMARKS.md", "models/quality.json"),
    ("docs/BENCHMARKS.md", "models/latency.json"),
    ("docs/BENCHMARKS.md", "models/sr2_quality.json"),
]
# The model card (scripts/make_model_card.py) embeds the same records' tables.
CARD_RECORDS = ["models/quality.json", "models/latency.json", "models/sr2_quality.json", "models/sr2_latency.json"]


def _record(name: str) -> dict:
    return json.loads((REPO / name).read_text())


@pytest.mark.parametrize(("document", "record"), GENERATED, ids=[f"{d}:{r}" for d, r in GENERATED])
def test_generated_section_is_what_its_record_renders_to(document, record):
    data = _record(record)
    section = read_marked_section(REPO / document, section_name(data))
    assert section is not None, f"{document} has no {section_name(data)} section"
    assert section == render(data).rstrip(), (
        f"{document}'s {section_name(data)} section differs from {record}: "
        f"run `python -m benchmarks.markdown {record} --into {document}`"
    )


@pytest.mark.parametrize("record", CARD_RECORDS)
def test_model_card_holds_its_records_tables(record):
    card = (REPO / "models" / "MODEL_CARD.md").read_text()
    assert render(_record(record)).rstrip() in card, f"models/MODEL_CARD.md is not generated from {record}"


def test_into_writes_between_the_records_markers_and_keeps_the_rest(tmp_path):
    record = tmp_path / "latency.json"
    record.write_text((REPO / "models" / "latency.json").read_text())
    doc = tmp_path / "doc.md"
    doc.write_text("intro quoting `<!-- latency:begin -->`\n\n"
                   "<!-- latency:begin -->\nSTALE TABLE\n<!-- latency:end -->\ntail\n")
    assert main([str(record), "--into", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro quoting `<!-- latency:begin -->`") and text.endswith("<!-- latency:end -->\ntail\n")
    assert read_marked_section(doc, "latency") == render(_record("models/latency.json")).rstrip()
    write_marked_section(doc, "new", "quality")  # a section the file lacks is appended
    assert read_marked_section(doc, "quality") == "new" and "STALE TABLE" not in text


def test_a_file_that_is_no_record_is_refused(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "regression"}))
    assert main([str(other)]) == 2
    assert "not a latency, quality, dose-curve or super-resolution record" in capsys.readouterr().err
