"""Widening a trained student (trainer/models/widen.py): the same function, live new channels."""

from __future__ import annotations

import pytest
import torch

from trainer.checkpoint import save_checkpoint
from trainer.models import create_model
from trainer.models.widen import is_widening, widen_student
from trainer.train import init_model

WINDOWS = [[-0.5, 1.5], [-2.35, -0.25], [1.0, 8.0]]


def _trained_like(**kwargs) -> torch.nn.Module:
    """A student whose every weight is random (a fresh one's zero tail would hide any error)."""
    torch.manual_seed(0)
    model = create_model("student", **kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model.eval()


def _input(model: torch.nn.Module, side: int = 32) -> torch.Tensor:
    torch.manual_seed(1)
    image = torch.rand(2, 1, side, side) * 3 - 1
    if model.input_channels == 2:
        return torch.cat([image, torch.full_like(image, 0.03)], 1)
    return image


@pytest.mark.parametrize("kwargs,wider", [
    ({"widths": [4, 8, 16, 32], "input_windows": WINDOWS, "noise_map": True}, [8, 12, 16, 40]),
    ({"widths": [4, 8]}, [6, 8]),
    ({"widths": [4, 8, 16], "stem_stride": 2}, [8, 8, 20]),
    ({"widths": [4, 8, 16], "stem_stride": 2, "input_windows": WINDOWS, "noise_map": True}, [6, 8, 16]),
    ({"widths": [4, 8, 16], "input_windows": WINDOWS, "noise_map": True, "extra_blocks": [1, 0, 2]}, [6, 8, 20]),
])
def test_widened_student_computes_the_same_function(kwargs, wider):
    model = _trained_like(**kwargs)
    widened = widen_student(model, wider).eval()
    assert widened.widths == wider and widened.model_kwargs["widths"] == wider
    x = _input(model)
    with torch.no_grad():
        expected, got = model(x), widened(x)
    scale = expected.abs().max()
    assert scale > 0.1  # the check below can fail
    # Float sums over more channels (of exact zeros) round differently: compare to the output scale.
    assert (got - expected).abs().max() <= 1e-5 * scale


def test_new_channels_are_distinct_and_learn():
    model = _trained_like(widths=[4, 8, 16], input_windows=WINDOWS, noise_map=True)
    widened = widen_student(model, [8, 8, 16]).train()
    new_rows = widened.head.convs[0].weight[4:].detach().flatten(1)
    assert torch.linalg.matrix_rank(new_rows) == 4  # random, not copies of one another
    widened(_input(model)).square().mean().backward()
    # The consumers' weights from the new channels start at zero but get a gradient.
    assert widened.fuse[0][0].weight[:4, 4:8].abs().sum() == 0
    assert widened.fuse[0][0].weight.grad[:4, 4:8].abs().sum() > 0
    assert widened.down[0][0][0].weight.grad[:, 4:].abs().sum() > 0


def test_widening_rules():
    assert is_widening([12, 24, 48, 96], [16, 32, 48, 96])
    assert not is_widening([12, 24, 48, 96], [12, 24, 48, 96])  # the same model
    assert not is_widening([12, 24, 48, 96], [8, 16, 32, 64])  # narrower: not a widening
    assert not is_widening([12, 24, 48, 96], [16, 32, 64])  # other depth
    assert not is_widening(None, [16, 32])
    with pytest.raises(ValueError, match="cannot widen"):
        widen_student(_trained_like(widths=[4, 8]), [2, 8])


def test_init_widens_a_checkpoint_to_wider_config_widths_and_ignores_narrower_ones(tmp_path, capsys):
    model = _trained_like(widths=[4, 8], input_windows=WINDOWS, noise_map=True)
    path = tmp_path / "small.pt"
    save_checkpoint(path, model)
    x = _input(model)
    wide, _ = init_model(path, {**model.model_kwargs, "widths": [6, 10]})
    assert wide.widths == [6, 10] and "widened to [6, 10]" in capsys.readouterr().err
    narrow, _ = init_model(path, {**model.model_kwargs, "widths": [2, 4]})
    assert narrow.widths == [4, 8] and "widths not used" in capsys.readouterr().err
    with torch.no_grad():
        expected = model(x)
        assert (wide.eval()(x) - expected).abs().max() <= 1e-5 * expected.abs().max()
        torch.testing.assert_close(narrow.eval()(x), model(x))


def test_init_extends_a_blind_checkpoint_with_a_noise_map_and_widens_it_at_once(tmp_path):
    blind = _trained_like(widths=[4, 8], input_windows=WINDOWS)
    path = tmp_path / "blind.pt"
    save_checkpoint(path, blind)
    model, _ = init_model(path, {**blind.model_kwargs, "noise_map": True, "widths": [6, 8]})
    assert model.input_channels == 2 and model.widths == [6, 8]
    image = _input(blind)
    with torch.no_grad():
        expected = blind(image)
        got = model.eval()(torch.cat([image, torch.full_like(image, 0.05)], 1))
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_init_deepens_a_checkpoint_with_identity_blocks_that_then_learn(tmp_path):
    shallow = _trained_like(widths=[4, 8, 16], input_windows=WINDOWS, noise_map=True)
    path = tmp_path / "shallow.pt"
    save_checkpoint(path, shallow)
    deeper, _ = init_model(path, {**shallow.model_kwargs, "extra_blocks": [1, 0, 2]})
    assert [len(blocks) for blocks in deeper.extra] == [1, 0, 2]
    x = _input(shallow)
    with torch.no_grad():
        expected = shallow(x)
        assert expected.abs().max() > 0.1  # the comparison below can fail
        torch.testing.assert_close(deeper.eval()(x), expected)
    deeper.train()(x).square().mean().backward()
    assert deeper.extra[2][1][0].weight.grad.abs().sum() > 0
    assert deeper.extra[0][0][0].weight.grad.abs().sum() > 0


def test_init_adds_anti_alias_blurs_keeping_every_trained_weight(tmp_path):
    plain = _trained_like(widths=[4, 8, 16], input_windows=WINDOWS, noise_map=True, extra_blocks=[1, 0, 0])
    path = tmp_path / "plain.pt"
    save_checkpoint(path, plain)
    blurred, _ = init_model(path, {**plain.model_kwargs, "anti_alias": True})
    assert blurred.model_kwargs["anti_alias"] is True and len(blurred.blur_down) == len(blurred.blur_up) == 2
    state = blurred.state_dict()
    for name, weight in plain.state_dict().items():
        torch.testing.assert_close(state[name], weight)
    wider = widen_student(blurred, [6, 8, 16])  # the fixed blurs are rebuilt at the new widths
    assert wider.blur_down[0].groups == 6


def test_extra_blocks_need_one_count_per_level():
    assert create_model("student", widths=[4, 8]).extra is None  # old models keep their module tree
    with pytest.raises(ValueError, match="one count >= 0 per level"):
        create_model("student", widths=[4, 8], extra_blocks=[1])
    with pytest.raises(ValueError, match="one count >= 0 per level"):
        create_model("student", widths=[4, 8], extra_blocks=[1, -1])


def test_init_with_all_zero_extra_blocks_is_the_checkpoint_unchanged(tmp_path):
    model = _trained_like(widths=[4, 8], input_windows=WINDOWS, noise_map=True)
    path = tmp_path / "plain.pt"
    save_checkpoint(path, model)
    same, _ = init_model(path, {**model.model_kwargs, "extra_blocks": [0, 0]})
    assert same.extra is None
    x = _input(model)
    with torch.no_grad():
        torch.testing.assert_close(same.eval()(x), model(x))
