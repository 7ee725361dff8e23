"""CT validation quality per dose level and kernel: ``python -m trainer.ct_levels CKPT ... --config CFG``.

The validation mean (``trainer.validate``) averages every CT level, kernel and window into one
number, so a gain where the model is weakest (smooth Hann-kernel noise at moderate dose) can hide
behind the rest. This scores every CT image-level of ``--config``'s validation split in the
soft-tissue window (``KERNEL@DOSE``) and the lung window (``lung KERNEL@DOSE``), each the mean over
the CT validation images, plus ``hann_low``: the soft-tissue mean over Hann at 25 % and 50 % dose,
the measure the shipping rules of issue 11 use (docs/TRAINING.md). The same keys prefixed ``real ``
(and ``real_hann_low``) hold the real scans alone, without the phantoms, whose piecewise-smooth
content rewards removing fine structure that real scans have (docs/TRAINING.md, nineteenth
session). A QAT checkpoint is scored with its quantizers on (INT8 as simulated in torch). The
test split is never loaded.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from trainer.checkpoint import load_model
from trainer.error_regions import ct_validation_images
from trainer.metrics import image_quality
from trainer.train import enhance_heldout
from trainer.validate import missing_inputs, validation_parser

HANN_LOW = ("hann@0.25", "hann@0.5")
REAL = "real "  # the prefix of the keys that score the real scans alone


def level_key(image) -> str | None:
    """``"hann@0.25"`` for a CT image simulated at 25 % dose through the Hann kernel; None for any
    other image (a paired real low-dose scan, another modality: no reconstruction kernel)."""
    return f"{image.kernel}@{image.level:g}" if image.kernel else None


def ct_level_scores(model: torch.nn.Module, images: list) -> dict[str, float]:
    """Soft-tissue and lung-window PSNR per ``KERNEL@DOSE`` (mean over images) and ``hann_low``;
    the same over the real scans alone under ``real ...`` keys and ``real_hann_low``."""
    per_level: dict[str, list[float]] = defaultdict(list)
    model.eval()
    for image in images:
        key = level_key(image)
        if key is None:
            continue
        with torch.inference_mode():
            pred = enhance_heldout(model, image, torch.device("cpu"))
        quality = image_quality(pred, image.clean, image.modality, image.spec, with_fsim=False, with_ssim=False)
        for prefix in ("", REAL) if not image.name.startswith("phantom:") else ("",):
            per_level[f"{prefix}{key}"].append(quality["psnr_window"])
            per_level[f"{prefix}lung {key}"].append(quality["psnr_lung"])
    scores = {key: round(float(np.mean(values)), 3) for key, values in sorted(per_level.items())}
    for prefix in ("", REAL):
        if all(f"{prefix}{key}" in per_level for key in HANN_LOW):
            hann_low = np.mean([np.mean(per_level[f"{prefix}{key}"]) for key in HANN_LOW])
            scores[f"{prefix.replace(' ', '_')}hann_low"] = round(float(hann_low), 3)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = validation_parser("python -m trainer.ct_levels", __doc__, "checkpoints (.pt) to score")
    args = parser.parse_args(argv)
    if missing_inputs(args):
        return 2
    torch.set_num_threads(args.threads)
    images = ct_validation_images(args.config)
    for path in args.checkpoints:
        model, _ = load_model(path)
        print(json.dumps({"checkpoint": str(path), "config": str(args.config),
                          **ct_level_scores(model, images)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
