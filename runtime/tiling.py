"""Run a model over whole frames: pad to the model's size multiple, batch, tile large images.

Frames are padded at the bottom and right by reflection to a multiple of the model's size
multiple, run, and cropped back. Frames larger than the tile size are cut into overlapping
tiles whose outputs are blended with smooth windows: inside each overlap a tile's weight is
exactly zero for ``margin`` pixels next to its cut edge and then rises along a raised cosine.
A model whose receptive-field radius is at most ``margin`` therefore gives the same result
tiled as untiled (every pixel is a convex mix of exact values), and larger models get a
seamless blend. Memory is bounded by one tile batch plus two frame-sized accumulators.

A super-resolution model (``scale`` s > 1) returns ``s`` times the rows and columns; tiles are
cut in input pixels and blended on the output grid, with overlap and margin scaled by ``s``
(input pixel ``i`` covers output pixels ``s*i .. s*i + s - 1``), so the same equivalence holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

InferFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TilePlan:
    """How to cut frames: sizes are in pixels; ``tile`` 0 means never tile."""

    size_multiple: int = 8
    tile: int = 1024
    overlap: int = 32
    margin: int = 8
    batch: int = 1
    min_side: int = 1
    scale: int = 1  # output rows and columns per input row and column (super-resolution: 2)

    def tile_side(self) -> int:
        """The tile size rounded down to the size multiple (at least one multiple)."""
        m = self.size_multiple
        return max(m, (self.tile // m) * m)

    def padded_side(self, length: int) -> int:
        """``length`` rounded up to the size multiple and to ``min_side``."""
        m = self.size_multiple
        return max(-(-length // m) * m, -(-self.min_side // m) * m)


def pad_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad ``(F, H, W)`` at the bottom/right to ``(F, height, width)`` by reflection."""
    pads = [(0, 0), (0, height - frames.shape[1]), (0, width - frames.shape[2])]
    if pads[1][1] == 0 and pads[2][1] == 0:
        return frames
    # Reflection needs two pixels along an axis; a one-pixel axis can only be repeated.
    mode = "reflect" if min(frames.shape[1:]) > 1 else "edge"
    return np.pad(frames, pads, mode=mode)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def edge_window(tile: int, cut_before: bool, cut_after: bool, overlap: int, margin: int) -> np.ndarray:
    """1-D blending weights of one tile: 1 inside, tapered only at cut (non-border) edges."""
    weights = np.ones(tile, dtype=np.float64)
    ramp_length = max(overlap - margin, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_length) + 0.5) / ramp_length)
    taper = np.concatenate([np.zeros(margin), ramp])[:tile]
    if cut_before:
        weights[: taper.size] *= taper
    if cut_after:
        weights[tile - taper.size :] *= taper[::-1]
    return weights


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run(infer: InferFn, tiles: list[np.ndarray], scale: int = 1) -> np.ndarray:
    output = infer(np.stack(tiles)[:, np.newaxis])
    height, width = tiles[0].shape
    if output.shape != (len(tiles), 1, height * scale, width * scale):
        expected = f" (the model's scale is {scale})" if scale != 1 else ""
        raise ValueError(f"model returned shape {list(output.shape)} for input {[len(tiles), 1, height, width]}"
                         f"{expected}")
    return output[:, 0]


def enhance_frames(frames: np.ndarray, infer: InferFn, plan: TilePlan) -> np.ndarray:
    """Apply ``infer`` to every ``(H, W)`` frame of ``frames`` ``(F, H, W)``; ``(F, sH, sW)`` out
    (``s`` the plan's scale: 1 keeps the shape)."""
    frames = np.asarray(frames, dtype=np.float32)
    count, height, width = frames.shape
    padded_h, padded_w = plan.padded_side(height), plan.padded_side(width)
    side, s = plan.tile_side(), plan.scale
    if plan.tile <= 0 or (padded_h <= side and padded_w <= side):
        padded = pad_frames(frames, padded_h, padded_w)
        out = np.empty((count, padded_h * s, padded_w * s), dtype=np.float32)
        for indices in _batches(list(range(count)), plan.batch):
            out[indices] = _run(infer, [padded[i] for i in indices], s)
        return out[:, : height * s, : width * s]
    return np.stack([_enhance_tiled(frame, infer, plan, padded_h, padded_w) for frame in frames])


def _enhance_tiled(frame: np.ndarray, infer: InferFn, plan: TilePlan, padded_h: int, padded_w: int) -> np.ndarray:
    side, s = plan.tile_side(), plan.scale
    tile_h, tile_w = min(side, padded_h), min(side, padded_w)
    overlap = min(plan.overlap, side // 2)
    margin = min(plan.margin, overlap // 2)
    padded = pad_frames(frame[np.newaxis], padded_h, padded_w)[0]
    rows, cols = tile_starts(padded_h, tile_h, overlap), tile_starts(padded_w, tile_w, overlap)
    # Windows live on the output grid: s output pixels per input pixel, overlap and margin too.
    windows_y = {y: edge_window(tile_h * s, y > 0, y + tile_h < padded_h, overlap * s, margin * s) for y in rows}
    windows_x = {x: edge_window(tile_w * s, x > 0, x + tile_w < padded_w, overlap * s, margin * s) for x in cols}
    total = np.zeros((padded_h * s, padded_w * s), dtype=np.float64)
    weight = np.zeros((padded_h * s, padded_w * s), dtype=np.float64)
    positions = [(y, x) for y in rows for x in cols]
    for group in _batches(positions, plan.batch):
        outputs = _run(infer, [padded[y : y + tile_h, x : x + tile_w] for y, x in group], s)
        for (y, x), output in zip(group, outputs):
            window = np.outer(windows_y[y], windows_x[x])
            total[y * s : (y + tile_h) * s, x * s : (x + tile_w) * s] += window * output
            weight[y * s : (y + tile_h) * s, x * s : (x + tile_w) * s] += window
    if not np.all(weight > 0):
        raise AssertionError("tile windows leave pixels uncovered")  # a planning bug, never input
    return (total / weight)[: frame.shape[0] * s, : frame.shape[1] * s].astype(np.float32)
