"""Config: files, overrides, validation and the CLI's help."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import Config, from_dict, load_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def test_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"stage": "teacher", "train": {"steps": 5}}))
    cfg = load_config(path, ["train.steps=20", "train.amp=bf16", 'model.kwargs={"base_width": 8}', "model.name=unetpp"])
    assert cfg.train.steps == 20 and cfg.train.amp == "bf16"
    assert cfg.model.name == "unetpp" and cfg.model.kwargs == {"base_width": 8}
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"stepz": 5}}))
    with pytest.raises(ValueError, match="stepz"):
        load_config(path)
    with pytest.raises(ValueError, match="stage"):
        load_config(None, ["stage=bogus"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    from trainer.data import DataConfig

    cfg = load_config(path)
    assert cfg.stage in path.name
    DataConfig.from_dict(cfg.data)  # the data section is valid for the data layer


def test_cli_help_explains_stages():
    out = subprocess.run([sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    for word in ("teacher", "distill", "qat", "--teacher", "--student"):
        assert word in out


def test_extends_merges_a_recipe_over_its_base(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({
        "_comment": "base", "stage": "qat", "train": {"steps": 100, "lr": 1e-4}, "qat": {"skip_modules": ["head", "tail"]}}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.json").write_text(json.dumps({
        "_comment": "child", "extends": "../base.json", "train": {"steps": 200}, "qat": {"float_kd": 1.0}}))
    cfg = load_config(tmp_path / "sub" / "child.json", ["train.lr=0.001"])
    assert cfg.stage == "qat" and cfg.train.steps == 200 and cfg.train.lr == 1e-3
    assert cfg.qat.skip_modules == ["head", "tail"] and cfg.qat.float_kd == 1.0
    (tmp_path / "weights.json").write_text(json.dumps({
        "extends": "base.json", "data": {"modality_weights": {"CT": 1.0}}}))
    (tmp_path / "base.json").write_text(json.dumps({
        "stage": "qat", "data": {"patch_size": 64, "modality_weights": {"CT": 0.6, "MR": 0.4}}}))
    weights = load_config(tmp_path / "weights.json")
    assert weights.data == {"patch_size": 64, "modality_weights": {"CT": 1.0}}  # a dict inside a section is replaced
    (tmp_path / "bad.json").write_text(json.dumps({"extends": ["base.json"]}))
    with pytest.raises(ValueError, match="must be a file name"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "loop.json").write_text(json.dumps({"extends": "loop.json"}))
    with pytest.raises(ValueError, match="loops back"):
        load_config(tmp_path / "loop.json")
    (tmp_path / "orphan.json").write_text(json.dumps({"extends": "missing.json"}))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_config(tmp_path / "orphan.json")
