"""scripts/make_model_card.py's carried stages: a stage whose run folder is gone is read from the
card that recorded it, marked as carried, and a name the card lacks is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.script_loader import load_script

REPO = Path(__file__).resolve().parents[1]


def _card_module():
    return load_script(REPO / "scripts" / "make_model_card.py")


def test_a_carried_stage_is_the_earlier_cards_record_with_its_config(tmp_path):
    card = {"stages": {"qat": {"model": "student", "kwargs": {"widths": [1]}, "parameters": 10, "gflop_512": 0.5,
                               "step": 7, "metrics": {"validation": {"psnr": 40.0}}, "data_summary": {}}},
            "configs": {"qat": {"stage": "qat", "train": {"steps": 7}}}}
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card))
    module = _card_module()
    carried = module.carried_stages(path, ["qat_v1=qat"])
    assert set(carried) == {"qat_v1"}
    stage = carried["qat_v1"]
    assert stage["step"] == 7 and stage["config"] == card["configs"]["qat"] and stage["carried_from"] == "model_card.json: qat"
    # A run folder's own stage wins over a carried one; carried ones fill the gaps in order.
    stages = module._stages(tmp_path / "no_run", ("teacher", "qat_v1", "qat"), carried)
    assert list(stages) == ["qat_v1"]
    with pytest.raises(SystemExit, match="no stage 'teacher' to carry"):
        module.carried_stages(path, ["teacher"])


def test_a_carried_stage_names_the_model_its_card_described(tmp_path):
    card = {"stages": {"qat": {"step": 7}}, "configs": {"qat": None},
            "files": {"medclear_student.qat.pt": {"sha256": "0123456789abcdef" * 4, "bytes": 1}}}
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card))
    carried = _card_module().carried_stages(path, ["qat_v2=qat"])
    assert carried["qat_v2"]["carried_from"] == "model_card.json (medclear_student.qat.pt sha256 0123456789ab): qat"


def test_a_renamed_stage_is_not_carried_from_a_card_already_made_for_the_current_model(tmp_path):
    digest = "0123456789abcdef" * 4
    card = {"stages": {"qat": {"step": 7}, "teacher": {"step": 3}}, "configs": {"qat": None, "teacher": None},
            "files": {"medclear_student.qat.pt": {"sha256": digest, "bytes": 1}}}
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card))
    module = _card_module()
    with pytest.raises(SystemExit, match="already describes the current medclear_student.qat.pt"):
        module.carried_stages(path, ["qat_v2=qat"], current_sha256=digest)
    # Same-name stages are still carried from it, and a renamed one from an earlier model's card.
    assert module.carried_stages(path, ["teacher"], current_sha256=digest)["teacher"]["step"] == 3
    assert module.carried_stages(path, ["qat_v2=qat"], current_sha256="f" * 64)["qat_v2"]["step"] == 7


def test_the_sr2_card_carries_its_stages_from_its_own_card(tmp_path):
    card = {"stages": {"qat": {"step": 3}}, "configs": {"qat": None},
            "files": {"medclear_sr2.qat.pt": {"sha256": "fedcba9876543210" * 4, "bytes": 1}}}
    path = tmp_path / "sr2_card.json"
    path.write_text(json.dumps(card))
    module = _card_module()
    carried = module.carried_stages(path, ["qat"], "medclear_sr2.qat.pt")
    assert carried["qat"]["carried_from"] == "sr2_card.json (medclear_sr2.qat.pt sha256 fedcba987654): qat"
    assert list(module._stages(tmp_path / "no_run", module.SR2_STAGES, carried)) == ["qat"]


def test_the_card_says_when_the_shipped_student_is_wider_than_the_chosen_size():
    module = _card_module()
    pareto = {"chosen": "runs/w12", "students": [{"run": "runs/w12", "model": {"kwargs": {"widths": [12, 24]}}}]}
    wider = {"kwargs": {"widths": [16, 32]}, "parameters": 298369, "gflop_512": 11.86}
    note = " ".join(module._widened_note(pareto, wider))
    assert "widened to [16, 32]" in note and "11.86 GFLOP" in note and "0.298M" in note
    assert module._widened_note(pareto, {**wider, "kwargs": {"widths": [12, 24]}}) == []
    assert module._widened_note(None, wider) == []


def test_the_card_refuses_a_record_of_another_split_than_test(tmp_path, monkeypatch):
    quality = tmp_path / "dose_curve_validation.json"
    quality.write_text(json.dumps({"benchmark": "dose_curve", "split": "validation", "validation_images": ["x"]}))
    monkeypatch.setattr("sys.argv", ["make_model_card.py", "--run", str(tmp_path), "--quality", str(quality)])
    with pytest.raises(SystemExit, match="validation split"):
        _card_module().main()


def test_training_ranges_say_that_doses_above_full_are_phantoms_only():
    card_script = _card_module()
    summary = {"degradation": {"ct": {"train_dose_range": [0.03, 2.0], "kernels": ["ramp", "hann"]},
                               "mr": {"noise": "rician", "train_sigma_range": [0.007, 0.1]}}}
    text = card_script._training_ranges(summary)
    assert text.startswith("CT 3-200 % dose (above 100 % on phantoms only) through 2 reconstruction kernels")
    assert "MR Rician 0.7-10 %" in text
    summary["degradation"]["ct"]["train_dose_range"] = [0.03, 1.0]
    assert "phantoms only" not in card_script._training_ranges(summary)
