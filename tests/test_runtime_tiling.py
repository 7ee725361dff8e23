"""Padding, batching and tiled inference: tiled output equals untiled output, with no seams."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_fixtures import make_smoothing_model, reference_smoothing

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.tiling import TilePlan, edge_window, enhance_frames, pad_frames, tile_starts


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    path = make_smoothing_model(tmp_path_factory.mktemp("model") / "smooth.onnx")
    with OnnxRuntimeBackend(path, threads=1) as opened:
        yield opened


def _image(rng, height, width):
    # Smooth structure plus noise, so that a seam would show as a step.
    y, x = np.mgrid[0:height, 0:width]
    return (np.sin(y / 17.0) * np.cos(x / 23.0) + 0.1 * rng.standard_normal((height, width))).astype(np.float32)


def test_untiled_output_matches_reference_and_keeps_shape(backend):
    rng = np.random.default_rng(0)
    frames = np.stack([_image(rng, 37, 53) for _ in range(3)])
    out = enhance_frames(frames, backend.infer, TilePlan(size_multiple=8, tile=0, batch=2))
    assert out.shape == frames.shape
    # Inside, away from the reflect-padded bottom/right edge, the model is plain 3x3 smoothing.
    reference = reference_smoothing(frames[1])
    np.testing.assert_allclose(out[1, :35, :51], reference[:35, :51], atol=1e-5)


def test_tiled_equals_untiled_without_seams(backend):
    rng = np.random.default_rng(1)
    frame = _image(rng, 301, 277)[np.newaxis]
    whole = enhance_frames(frame, backend.infer, TilePlan(size_multiple=8, tile=0))
    tiled = enhance_frames(frame, backend.infer, TilePlan(size_multiple=8, tile=64, overlap=16, margin=4, batch=3))
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # No seam: the row-to-row difference along each tile boundary is like anywhere else.
    starts = tile_starts(304, 64, 16)[1:]
    jumps = np.abs(np.diff(tiled[0], axis=0)).mean(axis=1)
    assert max(jumps[s - 1] for s in starts) < 3 * np.median(jumps)


def test_batch_size_does_not_change_results(backend):
    rng = np.random.default_rng(2)
    frames = np.stack([_image(rng, 64, 64) for _ in range(5)])
    one = enhance_frames(frames, backend.infer, TilePlan(size_multiple=8, tile=0, batch=1))
    many = enhance_frames(frames, backend.infer, TilePlan(size_multiple=8, tile=0, batch=4))
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_tiny_and_one_pixel_images_are_padded_and_cropped(backend):
    for shape in [(1, 1, 1), (1, 3, 3), (2, 1, 17)]:
        frames = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        assert enhance_frames(frames, backend.infer, TilePlan(size_multiple=8)).shape == shape


def test_windows_cover_every_pixel_and_are_zero_next_to_cuts():
    window = edge_window(64, True, True, overlap=16, margin=4)
    assert window[:4].max() == 0 and window[-4:].max() == 0
    assert window[16:48].min() == 1 and np.all(np.diff(window[4:16]) > 0)
    border = edge_window(64, False, False, overlap=16, margin=4)
    assert border.min() == 1  # image borders are never tapered


def test_pad_frames_reflects_and_tile_starts_cover():
    frames = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    padded = pad_frames(frames, 8, 8)
    assert padded.shape == (1, 8, 8)
    np.testing.assert_array_equal(padded[0, :3, :4], frames[0])
    assert padded[0, 3, 0] == frames[0, 1, 0]  # reflection, not zeros
    starts = tile_starts(300, 64, 16)
    assert starts[0] == 0 and starts[-1] == 300 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:]))


def test_cli_settings_carry_the_tile_plan_the_model_bounds():
    """runtime.enhance and the folder watcher build their settings with Settings.from_cli: the
    command line's tile, overlap and batch, bounded by what the model accepts."""
    from types import SimpleNamespace

    from runtime.backends.base import InputConstraints
    from runtime.enhance import Settings, build_parser

    args = build_parser().parse_args(["in", "-o", "out", "--tile", "512", "--overlap", "16", "--batch", "4",
                                      "--strength", "0.5", "--format", "npy"])
    limits = InputConstraints("input", 16, min_shape=(1, 1, 16, 16), max_shape=(2, 1, 256, 256))
    bounded = SimpleNamespace(constraints=limits, contract=SimpleNamespace(scale=1))
    settings = Settings.from_cli(args, bounded)
    assert (settings.plan.tile, settings.plan.overlap, settings.plan.batch, settings.plan.size_multiple) == (256, 16, 2, 16)
    assert (settings.fmt, settings.strength, str(settings.outdir)) == ("npy", 0.5, "out")
    assert Settings.from_cli(args).plan == TilePlan()  # no model yet: the default plan
    strong = build_parser().parse_args(["in", "-o", "out", "--strength", "2"])
    with pytest.raises(ValueError, match="strength"):  # an x2 model takes a strength of at most 1
        Settings.from_cli(strong, SimpleNamespace(constraints=limits, contract=SimpleNamespace(scale=2)))
