"""trainer.quant_sensitivity: the validation gain from leaving one quantized module in float."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import save_checkpoint
from trainer.data import DataConfig, normalization_table
from trainer.qat import quantization_info, quantize
from trainer.quant_sensitivity import float_module, main, module_groups, quantized_modules

from trainer_fixtures import perturbed_noise_map_student

TINY = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny_qat.json"


def tiny_qat_student(skip: tuple[str, ...] = ("tail",)) -> torch.nn.Module:
    """The perturbed tiny noise-map student, quantized and calibrated on random inputs."""
    model = perturbed_noise_map_student(0.3)

    def calibrate(m):
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):
            m(torch.rand(2, 2, 32, 32, generator=generator))

    return quantize(model, calibrate, skip)


def test_quantized_modules_and_their_groups():
    model = tiny_qat_student(skip=("tail", "head"))
    names = quantized_modules(model)
    assert names and not any(n.startswith(("tail", "head")) for n in names)
    assert "up.0.0.0" in names and "down.0.0.0" in names
    groups = module_groups(names, 2)
    assert groups["up.0"] == [n for n in names if n.startswith("up.0.")]
    assert sum(len(members) for members in groups.values()) == len(names)
    assert module_groups(names, 99) == {n: [n] for n in names}


@contextlib.contextmanager
def all_float(model: torch.nn.Module):
    """Every quantized module of ``model`` in float within the block."""
    with contextlib.ExitStack() as stack:
        for name in quantized_modules(model):
            stack.enter_context(float_module(model, name))
        yield


def test_float_module_switches_only_inside_the_block():
    torch.manual_seed(0)
    model = tiny_qat_student().eval()
    x = torch.rand(1, 2, 32, 32)
    conv = model.get_submodule("up.0.0.0")
    with torch.no_grad():
        quantized = model(x)
        with all_float(model):
            all_float_output = model(x)
        after = model(x)
    torch.testing.assert_close(after, quantized)  # the quantizers are back on
    assert not torch.allclose(all_float_output, quantized)  # INT8 simulation changes the output
    with float_module(model, "up.0.0.0", ("input_quantizer",)):
        assert not conv.input_quantizer.is_enabled and conv.weight_quantizer.is_enabled
    with float_module(model, "up.0.0.0"):
        assert not conv.input_quantizer.is_enabled and not conv.weight_quantizer.is_enabled
    assert conv.input_quantizer.is_enabled and conv.weight_quantizer.is_enabled


def test_cli_reports_the_quantized_model_and_each_group(tmp_path, capsys):
    config = json.loads(TINY.read_text())
    config["data"].update(modalities=["CT", "DX"], noise_map=True, dose_fractions=[0.25, 0.5], eval_ct_kernels=["hann"],
                          xray_noise="quantum", xray_photons=[300.0], xray_phantoms=0, xray_validation_phantoms=1,
                          noise_aug_prob=0.0)
    config_path = tmp_path / "tiny_dx.json"
    config_path.write_text(json.dumps(config))
    data = DataConfig.from_dict(config["data"])
    model = tiny_qat_student()
    path = tmp_path / "tiny.qat.pt"
    save_checkpoint(path, model, normalization=normalization_table(data), modalities=data.modalities, stage="qat",
                    quantization=quantization_info(model, ["tail"]))
    assert main([str(path), "--config", str(config_path), "--only", "^up", "--split"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    base, groups = rows[0], rows[1:]
    assert base["group"] is None and {"overall", "CT", "DX", "hann_low"} <= set(base)
    expected = module_groups([n for n in quantized_modules(model) if n.startswith("up")], 2)
    assert [(r["group"], r["quantizers"]) for r in groups] == [(g, k) for g in expected for k in ("all", "input", "weight")]
    for row in groups:
        assert row["members"] == expected[row["group"]]
        assert row["gain_DX"] == pytest.approx(row["DX"] - base["DX"], abs=1e-3)
        assert row["gain_hann_low"] == pytest.approx(row["hann_low"] - base["hann_low"], abs=1e-3)
    assert any(row["gain_overall"] != 0 for row in groups)  # switching quantizers off changes the scores


def test_cli_refuses_a_float_checkpoint_and_bad_options(tmp_path, capsys):
    path = tmp_path / "float.pt"
    save_checkpoint(path, perturbed_noise_map_student())
    assert main([str(path), "--config", str(TINY)]) == 2
    assert "not a QAT checkpoint" in capsys.readouterr().err
    for bad in (["--depth", "0"], ["--only", "up.("]):
        with pytest.raises(SystemExit):
            main([str(path), "--config", str(TINY), *bad])
