"""Validation measures of a deployed model beyond its mean PSNR: ``python -m trainer.rule_measures ONNX ... --config CFG``.

The rules that decide whether a candidate default model ships (docs/TRAINING.md, issue 11) bound
two failure modes the validation mean hides; both are measured on ``--config``'s validation split
with the exported model (ONNX, e.g. ``NAME.int8.onnx``) through ``runtime.pipeline.enhance_values``,
exactly as ``runtime.enhance`` runs it:

- ``dark_band``: on the unsaturated synthetic validation radiographs (odd-numbered
  ``phantom:xray-val-i``) at 300 quanta, the squared error (in units of the clean image's
  normalization range) over the pixels whose clean value lies in the dark band 0.02-0.2, the mean
  over the images. A model biased downwards in dark tissue fails here first.
- ``mr_level_sensitivity``: each MR validation level's PSNR (normalized, clipped to [0, 1]) when the
  model is told the measured noise level times 0.8, 0.9, 1.1 and 1.25, as a change from the
  measured level; ``worst_mr_level_loss_db`` is the lowest change. A noise-map model that
  re-sharpens or over-smooths when the runtime's estimate is off by 20 % fails here.

The test split is never loaded.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from runtime.backends import Backend
from runtime.normalization import denormalize, normalize
from runtime.pipeline import enhance_values, open_model, tile_plan
from trainer.config import load_config
from trainer.metrics import psnr
from trainer.validate import missing_inputs, validation_images, validation_parser

DARK_BAND = (0.02, 0.2)  # clean values, normalized
DARK_BAND_QUANTA = 300.0
LEVEL_FACTORS = (0.8, 0.9, 1.1, 1.25)
_XRAY_VALIDATION = re.compile(r"phantom:xray-val-(\d+)$")


@dataclass
class ToldLevelBackend:
    """A noise-map backend whose noise-level channel (the constant second input channel) is
    multiplied by ``factor``: the model told ``factor`` times the level the runtime measured."""

    backend: Backend
    factor: float

    @property
    def contract(self):
        return self.backend.contract

    @property
    def constraints(self):
        return self.backend.constraints

    def infer(self, batch: np.ndarray) -> np.ndarray:
        told = np.array(batch, dtype=np.float32)
        told[:, 1:] *= self.factor
        return self.backend.infer(told)


def runtime_output(backend: Backend, image, factor: float = 1.0) -> np.ndarray:
    """A validation image through the runtime (its degraded modality values in, enhanced values
    out), in the clean reference's normalization; ``factor`` scales the told noise level."""
    values = denormalize(image.degraded, image.state).astype(np.float32)
    runner = backend if factor == 1.0 else ToldLevelBackend(backend, factor)
    enhanced = enhance_values(runner, values, image.modality, plan=tile_plan(backend))
    return normalize(enhanced, image.state)


def is_unsaturated_radiograph(image) -> bool:
    """Odd-numbered synthetic validation radiographs do not saturate at their dark open field."""
    match = _XRAY_VALIDATION.search(image.name)
    return match is not None and int(match.group(1)) % 2 == 1


def dark_band(backend: Backend, images: list) -> dict:
    """Mean squared error in the clean dark band of the unsaturated validation radiographs at 300 quanta."""
    chosen = [im for im in images if is_unsaturated_radiograph(im) and im.level == DARK_BAND_QUANTA]
    if not chosen:
        raise ValueError("no unsaturated synthetic validation radiographs at 300 quanta in this split")
    per_image = []
    for image in chosen:
        band = (image.clean >= DARK_BAND[0]) & (image.clean <= DARK_BAND[1])
        error = runtime_output(backend, image) - image.clean
        per_image.append(float(np.mean(error[band].astype(np.float64) ** 2)))
    return {"mse": float(np.mean(per_image)), "images": len(per_image), "per_image": per_image}


def mr_level_sensitivity(backend: Backend, images: list, factors: tuple[float, ...] = LEVEL_FACTORS) -> dict:
    """Per MR validation level: PSNR at the measured level and its change when told ``factors`` times it."""
    by_level: dict[str, list] = defaultdict(list)
    for image in images:
        if image.modality == "MR":
            by_level[f"MR@{image.level:g}"].append(image)
    if not by_level:
        raise ValueError("no MR validation images in this split")

    def mean_psnr(level_images: list, factor: float) -> float:
        return float(np.mean([psnr(np.clip(runtime_output(backend, im, factor), 0, 1), np.clip(im.clean, 0, 1), 1.0)
                              for im in level_images]))

    result: dict = {}
    for key, level_images in sorted(by_level.items()):
        base = mean_psnr(level_images, 1.0)
        result[key] = {"psnr_at_measured_level": round(base, 2),
                       "loss_db_when_told": {f"{f:g}": round(mean_psnr(level_images, f) - base, 3) for f in factors}}
    result["worst_mr_level_loss_db"] = min(v for level in result.values() for v in level["loss_db_when_told"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = validation_parser("python -m trainer.rule_measures", __doc__, "exported models (.onnx) to measure")
    args = parser.parse_args(argv)
    if missing_inputs(args):
        return 2
    images = validation_images(load_config(args.config))
    for path in args.checkpoints:
        backend = open_model(path, "onnxruntime", threads=args.threads, cpu_only=True)
        try:
            print(json.dumps({"model": str(path), "config": str(args.config),
                              "dark_band": dark_band(backend, images),
                              "mr_level_sensitivity": mr_level_sensitivity(backend, images)}))
        finally:
            backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
