"""Score checkpoints on one validation split: ``python -m trainer.validate CKPT ... --config CFG``.

Models trained on different data configurations choose their best.pt on different validation
sets; comparing them means scoring each on the same one(s). This runs the trainer's own
validation (``trainer.train.evaluate``: display-window PSNR, mean over modalities) for every
checkpoint on the validation split of ``--config``'s ``data``, and prints one JSON object per
checkpoint (``images``: how many validation image-levels it scored). Every image of the split
is scored unless ``--max-images`` says otherwise: the config's own ``eval.max_images`` (8 by
default, for quick evaluations during training) is not used. The test split is never loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from trainer.checkpoint import load_model
from trainer.config import Config, load_config
from trainer.train import evaluate


def validation_images(cfg: Config) -> list:
    """Every image-level of the validation split that ``cfg``'s data defines."""
    from trainer.data import DataConfig, build_heldout_set

    return build_heldout_set(DataConfig.from_dict(cfg.data), "validation")


def validation_scores(
    checkpoints: list[Path], config: Path, threads: int = 1, max_images: int = 0, runtime_normalization: bool = False,
) -> list[dict]:
    """``trainer.train.evaluate`` of each checkpoint on ``config``'s validation split (its first
    ``max_images`` image-levels; 0: all of them); ``runtime_normalization`` turns the config's
    ``eval.runtime_normalization`` on (MR and X-ray fed as runtime.enhance feeds them)."""
    torch.set_num_threads(threads)
    cfg = load_config(config)
    cfg.eval.max_images = 0  # the images are chosen here, not by the config's quick-evaluation limit
    cfg.eval.runtime_normalization = cfg.eval.runtime_normalization or runtime_normalization
    images = validation_images(cfg)[: max_images or None]
    results = []
    for path in checkpoints:
        model, _ = load_model(path)
        results.append({"checkpoint": str(path), "config": str(config), "images": len(images),
                        **evaluate(model, images, cfg, torch.device("cpu"))})
    return results


def validation_parser(prog: str, description: str, checkpoints_help: str) -> argparse.ArgumentParser:
    """The arguments of every tool that examines checkpoints (or exported models) on a config's
    validation split: the checkpoints, ``--config`` and ``--threads``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help=checkpoints_help)
    parser.add_argument("--config", type=Path, required=True,
                        help="trainer config (.json) whose 'data' defines the validation split")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of PyTorch or ONNX Runtime (default: 1)")
    return parser


def missing_inputs(args: argparse.Namespace) -> bool:
    """Say on stderr which of the checkpoints and the config do not exist; True if any."""
    missing = [str(p) for p in args.checkpoints + [args.config] if not p.is_file()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
    return bool(missing)


def main(argv: list[str] | None = None) -> int:
    parser = validation_parser("python -m trainer.validate", __doc__, "checkpoints (.pt) to score")
    parser.add_argument("--max-images", type=int, default=0,
                        help="score only the first N validation image-levels (default 0: all; the config's "
                        "eval.max_images is not used)")
    parser.add_argument("--runtime-normalization", action="store_true",
                        help="normalize MR and X-ray images by a fit on the degraded image, as runtime.enhance "
                        "does, instead of on the clean reference (eval.runtime_normalization; CT is the same "
                        "either way); scores stay in the reference's normalization")
    args = parser.parse_args(argv)
    if args.max_images < 0:
        parser.error(f"--max-images must be 0 (all) or more, got {args.max_images}")
    if missing_inputs(args):
        return 2
    try:
        for result in validation_scores(args.checkpoints, args.config, args.threads, args.max_images,
                                        args.runtime_normalization):
            print(json.dumps(result))
    except (OSError, ValueError, KeyError) as error:  # an unreadable checkpoint, a file that is not a config
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
