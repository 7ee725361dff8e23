"""Which quantized layer costs what: ``python -m trainer.quant_sensitivity QAT_CKPT --config CFG``.

A QAT model loses some validation PSNR to its float weights (the "INT8 cost"). This tells where:
for each quantized module of a QAT checkpoint it switches that module's quantizers off (the rest
stay INT8 as simulated in torch), scores the validation split, and reports the gain over the
fully quantized model per modality (``DX``, ``CT``, ``MR``, as deployed: runtime normalization)
and at CT Hann low dose (``hann_low``, ``trainer.ct_levels``). A large gain marks a layer that is
worth keeping in float (``qat.skip_modules``) if its latency cost on the target is acceptable.
Prints one JSON object per module and one for the fully quantized model (``module``: null).
The test split is never loaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys

import torch
from torch import nn

from trainer.checkpoint import load_model
from trainer.config import load_config
from trainer.ct_levels import ct_level_scores
from trainer.train import evaluate
from trainer.validate import missing_inputs, validation_images, validation_parser

MODALITY_KEYS = ("psnr", "psnr_CT", "psnr_DX", "psnr_MR")


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose own quantizers are enabled (e.g. ``"up.0.0"``), in model order."""
    names = []
    for name, module in model.named_modules():
        quantizers = [child for child_name, child in module.named_children() if child_name.endswith("_quantizer")]
        if any(getattr(q, "is_enabled", False) for q in quantizers):
            names.append(name)
    return names


@contextlib.contextmanager
def float_module(model: nn.Module, name: str):
    """Within the block, ``model``'s module ``name`` runs with its quantizers off (float)."""
    module = model.get_submodule(name)
    switched = [q for child_name, q in module.named_children() if child_name.endswith("_quantizer") and q.is_enabled]
    for quantizer in switched:
        quantizer.disable()
    try:
        yield
    finally:
        for quantizer in switched:
            quantizer.enable()


def module_groups(names: list[str], depth: int) -> dict[str, list[str]]:
    """Quantized module names grouped by their first ``depth`` dotted parts (``"up.0"``: its convs)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(".".join(name.split(".")[:depth]), []).append(name)
    return groups


def scores(model: nn.Module, images: list, ct_images: list, cfg) -> dict[str, float]:
    """Validation means per modality and CT ``hann_low`` of ``model`` as it is now."""
    result = evaluate(model, images, cfg, torch.device("cpu"))
    row = {key.removeprefix("psnr_") if key != "psnr" else "overall": round(result[key], 4)
           for key in MODALITY_KEYS if key in result}
    row["hann_low"] = ct_level_scores(model, ct_images).get("hann_low")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = validation_parser("python -m trainer.quant_sensitivity", __doc__, "QAT checkpoints (.pt)")
    parser.add_argument("--depth", type=int, default=2,
                        help="group modules by this many dotted name parts (default 2: 'up.0', 'down.1'; "
                        "a large value scores every conv alone)")
    parser.add_argument("--only", default=None,
                        help="regular expression: score only the groups whose name matches")
    args = parser.parse_args(argv)
    if missing_inputs(args):
        return 2
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg.eval.max_images, cfg.eval.runtime_normalization = 0, True
    images = validation_images(cfg)
    ct_images = [image for image in images if image.modality == "CT"]
    for path in args.checkpoints:
        model, ckpt = load_model(path)
        if not ckpt.get("quantization"):
            print(f"error: {path}: not a QAT checkpoint (no quantization entry)", file=sys.stderr)
            return 2
        base = scores(model, images, ct_images, cfg)
        print(json.dumps({"checkpoint": str(path), "module": None, **base}), flush=True)
        for group, members in module_groups(quantized_modules(model), args.depth).items():
            if args.only and not re.search(args.only, group):
                continue
            with contextlib.ExitStack() as stack:
                for name in members:
                    stack.enter_context(float_module(model, name))
                row = scores(model, images, ct_images, cfg)
            gain = {f"gain_{key}": round(value - base[key], 4) for key, value in row.items() if value is not None}
            print(json.dumps({"checkpoint": str(path), "module": group, "members": members, **row, **gain}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
