"""Model registry, shapes, parameter and FLOP budgets of the teacher and the student."""

from pathlib import Path

import pytest
import torch
from torch import nn

from trainer.models import count_flops, count_parameters, create_model, list_models

SLICE = (1, 1, 512, 512)


def test_registry_names_and_attributes():
    assert {"unetpp", "student"} <= set(list_models())
    model = create_model("student", width=8, depth=2)
    assert model.model_name == "student" and model.model_kwargs == {"width": 8, "depth": 2}
    assert model.size_multiple == 4
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")


@pytest.mark.parametrize("name,kwargs", [("unetpp", {"base_width": 4, "depth": 3}),
                                         ("unetpp", {"base_width": 4, "deep_supervision": True}),
                                         ("student", {"width": 4}), ("student", {"widths": [4, 8, 16, 32]})])
def test_shape_preserved_and_identity_at_init(name, kwargs):
    model = create_model(name, **kwargs).eval()
    m = model.size_multiple
    x = torch.rand(2, 1, 3 * m, 5 * m)
    y = model(x)
    assert y.shape == x.shape
    # The residual output head starts at zero, so a fresh model is the identity.
    assert torch.equal(y, x)


def test_unetpp_paper_parameter_count():
    # Zhou et al. 2018 report 9.04M parameters for widths 32..512; this implementation
    # (two 3x3 convs + BN per node, single-channel in/out) lands in the same ballpark.
    params = count_parameters(create_model("unetpp", base_width=32, depth=5))
    assert 8.5e6 < params < 9.5e6, params


def test_unetpp_deep_supervision_outputs():
    model = create_model("unetpp", base_width=4, depth=4, deep_supervision=True)
    _, aux = model.forward_with_aux(torch.rand(1, 1, 16, 16))
    assert len(aux["deep"]) == 3
    assert [f.shape[1] for f in aux["features"]] == [4, 8, 16, 32]


def test_flop_convention_is_two_per_multiply_add():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    assert count_flops(conv, (1, 3, 8, 8)) == 2 * 3 * 5 * 9 * 8 * 8


@pytest.fixture(scope="module")
def paper_teacher_flops():
    return count_flops(create_model("unetpp", base_width=32, depth=5), SLICE)


@pytest.mark.parametrize("kwargs", [{"width": 16}, {"widths": [8, 16, 32, 64]}, {"widths": [8, 24, 48]}])
def test_student_budget(kwargs, paper_teacher_flops):
    student = create_model("student", **kwargs)
    s_flops, t_flops = count_flops(student, SLICE), paper_teacher_flops
    assert count_parameters(student) <= 0.5e6
    assert s_flops <= 15e9
    assert t_flops / s_flops >= 10


def test_shipped_student_is_lighter_than_default_teacher():
    from trainer.config import load_config

    configs = Path(__file__).resolve().parents[1] / "trainer" / "configs"
    s_spec = load_config(configs / "default_distill.json").model
    t_spec = load_config(configs / "default_teacher.json").model
    student, teacher = create_model(s_spec.name, **s_spec.kwargs), create_model(t_spec.name, **t_spec.kwargs)
    assert count_parameters(student) <= 0.5e6
    assert count_flops(teacher, SLICE) / count_flops(student, SLICE) >= 10
    assert count_flops(student, SLICE) <= 5e9


def test_student_uses_only_tensorrt_friendly_layers():
    allowed = (nn.Conv2d, nn.ReLU, nn.Upsample, nn.Sequential, nn.ModuleList, nn.Hardtanh)  # Hardtanh: ONNX Clip
    model = create_model("student", widths=[8, 16, 32, 64], input_clip=[-0.5, 1.5])
    kinds = {type(m) for m in model.modules() if m is not model}
    assert all(issubclass(k, allowed) for k in kinds), kinds
    assert all(m.mode == "nearest" for m in model.modules() if isinstance(m, nn.Upsample))


def test_student_input_clip_limits_what_the_network_sees_not_the_output():
    torch.manual_seed(0)
    model = create_model("student", widths=[4, 8], input_clip=[-0.5, 1.5])
    nn.init.normal_(model.tail.weight, std=0.1)  # leave the identity start
    x = torch.rand(1, 1, 16, 16)
    far = x.clone()
    far[..., :4, :4] = 6.0  # e.g. dense bone in the soft-tissue-window normalization
    beyond = far.clone()
    beyond[..., :4, :4] = 9.0
    with torch.no_grad():
        a, b = model(far), model(beyond)
    # The network sees both as 1.5, so its correction is identical; the output keeps the input's values.
    torch.testing.assert_close(a - far, b - beyond)
    assert float((b - a)[..., :4, :4].mean()) == pytest.approx(3.0, abs=1e-5)
    with pytest.raises(ValueError, match="input_clip"):
        create_model("student", widths=[4, 8], input_clip=[1.0, 0.0])


def test_anti_alias_adds_fixed_binomial_blurs_at_every_level():
    """anti_alias: a fixed depthwise blur before each stride-2 conv and after each nearest x2
    upsample; no trainable parameters, and its FLOPs are exactly those depthwise convs."""
    kwargs = {"widths": [4, 8, 16], "input_windows": [[-0.5, 1.5], [-2.35, -0.25]], "noise_map": True}
    plain, blurred = create_model("student", **kwargs), create_model("student", **kwargs, anti_alias=True)
    assert plain.blur_down is None and plain.blur_up is None
    assert count_parameters(blurred) == count_parameters(plain)
    binomial = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    for level, width in enumerate(kwargs["widths"][:-1]):
        for blur in (blurred.blur_down[level], blurred.blur_up[level]):
            assert blur.groups == width and torch.equal(blur.weight[:, 0], binomial.expand(width, 3, 3))
    depthwise = sum(2 * 9 * width * (512 // 2**level) ** 2 * 2 for level, width in enumerate(kwargs["widths"][:-1]))
    assert count_flops(blurred) - count_flops(plain) == depthwise
    with torch.no_grad():
        for parameter in blurred.parameters():
            if parameter.requires_grad:
                parameter.normal_(0.0, 0.2)
    x = torch.cat([torch.rand(1, 1, 32, 32), torch.full((1, 1, 32, 32), 0.03)], 1)
    blurred(x).square().mean().backward()
    assert blurred.blur_down[0].weight.grad is None and blurred.down[0][0][0].weight.grad.abs().sum() > 0


def test_anti_alias_output_moves_less_with_the_stride_grid():
    """The point of the blurs: shifting the input by one pixel changes the output of the same
    weights less than without them (the stride-2 grid's phase matters less)."""
    kwargs = {"widths": [8, 16, 32]}
    gaps = {}
    for anti_alias in (False, True):
        torch.manual_seed(0)
        model = create_model("student", **kwargs, anti_alias=anti_alias).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0.0, 0.3)
            image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
            shifted = model(torch.roll(image, 1, dims=-1))
            gaps[anti_alias] = float((torch.roll(model(image), 1, dims=-1) - shifted)[..., 8:-8, 8:-8].abs().mean())
    assert gaps[True] < 0.8 * gaps[False], gaps
