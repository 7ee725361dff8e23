"""Where a CT denoiser's error lies: ``python -m trainer.error_regions CKPT ... --config CFG``.

A PSNR says how much error there is, not where. On every CT image-level of ``--config``'s
validation split this splits the soft-tissue-window pixels (reference inside [0, 1] of the
normalized range) into three regions and reports the RMS error in HU in each:

- ``window_edge``: within 4 pixels of a pixel outside the window (bone above it, air or lung
  below): thin layers and edges next to high contrast, e.g. brain along the skull;
- ``tissue_edge``: other pixels whose 3x3 neighbourhood spans more than 8 HU (organ and lesion
  borders inside the window);
- ``flat``: the rest.

Three images are scored against the reference: the noisy ``input``, the model's ``output``,
and ``identity``: the model applied to the *reference itself* with the noisy image's noise
level, i.e. how much the model changes an image that needs no change at that setting. An
``identity`` error near the ``output`` error says the model's error is a floor of its own, not
noise it left. The test split is never loaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from trainer.checkpoint import load_model
from trainer.config import load_config
from trainer.data.datasets import HeldoutImage
from trainer.train import enhance_slice, heldout_level
from trainer.validate import missing_inputs, validation_images, validation_parser

EDGE_DISTANCE_PX = 4
TISSUE_EDGE_HU = 8.0


def region_masks(clean: np.ndarray, hu_per_unit: float) -> dict[str, np.ndarray]:
    """Boolean masks of the three regions over a normalized CT reference (see the module text)."""
    inside = (clean > 0) & (clean < 1)
    near_outside = ndimage.distance_transform_edt(inside) <= EDGE_DISTANCE_PX
    tissue_edge = ndimage.morphological_gradient(clean, size=3) * hu_per_unit > TISSUE_EDGE_HU
    return {
        "window_edge": inside & near_outside,
        "tissue_edge": inside & ~near_outside & tissue_edge,
        "flat": inside & ~near_outside & ~tissue_edge,
    }


def _rms_hu(error: np.ndarray, mask: np.ndarray, hu_per_unit: float) -> float | None:
    return float(np.sqrt(np.mean(error[mask] ** 2)) * hu_per_unit) if mask.any() else None


def image_error_regions(model: torch.nn.Module, image: HeldoutImage) -> dict:
    """RMS error (HU) per region of ``input``, ``output`` and ``identity`` for one CT image-level."""
    hu_per_unit = image.spec.hu_max - image.spec.hu_min
    level = heldout_level(model, image)
    device = torch.device("cpu")
    with torch.inference_mode():
        output = enhance_slice(model, image.degraded, device, level)
        identity = enhance_slice(model, image.clean, device, level)
    masks = region_masks(image.clean, hu_per_unit)
    result: dict = {"image": image.name, "degradation": image.degradation,
                    "pixels": {name: int(mask.sum()) for name, mask in masks.items()}}
    for label, values in (("input", image.degraded), ("output", output), ("identity", identity)):
        error = np.asarray(values, dtype=np.float64) - image.clean
        result[label] = {name: _rms_hu(error, mask, hu_per_unit) for name, mask in masks.items()}
    return result


def ct_validation_images(config: Path, degradations: list[str] | None = None) -> list[HeldoutImage]:
    """The CT image-levels of ``config``'s validation split (only ``degradations`` when given)."""
    return [image for image in validation_images(load_config(config))
            if image.modality == "CT" and (not degradations or image.degradation in degradations)]


def main(argv: list[str] | None = None) -> int:
    parser = validation_parser("python -m trainer.error_regions", __doc__, "checkpoints (.pt) to examine")
    parser.add_argument("--degradation", action="append", default=None,
                        help="only this degradation, e.g. ct_dose_0.5_hann (repeatable; default: every CT level)")
    args = parser.parse_args(argv)
    if missing_inputs(args):
        return 2
    torch.set_num_threads(args.threads)
    images = ct_validation_images(args.config, args.degradation)
    if not images:
        print(f"error: {args.config}: no CT validation image-levels match {args.degradation}", file=sys.stderr)
        return 2
    for path in args.checkpoints:
        model, _ = load_model(path)
        model.eval()
        for image in images:
            print(json.dumps({"checkpoint": str(path), **image_error_regions(model, image)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
