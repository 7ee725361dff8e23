"""Which quantized layer costs what: ``python -m trainer.quant_sensitivity QAT_CKPT --config CFG``.

A QAT model loses some validation PSNR to its float weights (the "INT8 cost"). This tells where:
for each group of quantized modules of a QAT checkpoint (``--depth`` dotted name parts: ``up.0``,
``fuse.1``, ...) it switches that group's quantizers off (the rest stay INT8 as simulated in torch),
scores the validation split, and reports the gain over the fully quantized model per modality
(``CT``, ``DX``, ``MR``, ... as deployed: runtime normalization), overall and at CT Hann low dose
(``hann_low``, ``trainer.ct_levels``). With ``--split`` each group is also scored with only its
input quantizers off and with only its weight quantizers off. A large gain marks a layer worth
keeping in float (``qat.skip_modules``) if its latency cost on the target is acceptable.

Prints one JSON object for the fully quantized model (``group``: null), then one per group (and
quantizer kind): ``group``, ``quantizers`` (``"all"``, ``"input"`` or ``"weight"``), ``members``
(the modules switched), the scores and ``gain_*`` (score minus the fully quantized model's).
The test split is never loaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator

import torch
from torch import nn

from trainer.checkpoint import load_model
from trainer.config import Config, load_config
from trainer.ct_levels import ct_level_scores
from trainer.train import evaluate
from trainer.validate import missing_inputs, validation_images, validation_parser

MODALITY_KEY = re.compile(r"^psnr_[A-Z]+$")  # psnr_CT, psnr_DX, ...: not per source, not psnr_input
QUANTIZER_KINDS = {"all": ("input_quantizer", "weight_quantizer"), "input": ("input_quantizer",),
                   "weight": ("weight_quantizer",)}


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose own quantizers are enabled (e.g. ``"up.0.0.0"``), in model order."""
    return [name for name, module in model.named_modules()
            if any(child_name in QUANTIZER_KINDS["all"] and child.is_enabled for child_name, child in module.named_children())]


@contextlib.contextmanager
def float_module(model: nn.Module, name: str, kinds: tuple[str, ...] = QUANTIZER_KINDS["all"]) -> Iterator[None]:
    """Within the block, ``model``'s module ``name`` runs with its quantizers of ``kinds`` off."""
    module = model.get_submodule(name)
    switched = [q for child_name, q in module.named_children() if child_name in kinds and q.is_enabled]
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


def scores(model: nn.Module, images: list, ct_images: list, cfg: Config) -> dict[str, float | None]:
    """Validation means (``overall`` and per modality) and CT ``hann_low`` of ``model`` as it is now.
    (``evaluate`` and ``ct_level_scores`` each run the CT images: simpler than sharing predictions.)"""
    result = evaluate(model, images, cfg, torch.device("cpu"))
    row: dict[str, float | None] = {"overall": round(result["psnr"], 4)}
    row.update({key.removeprefix("psnr_"): round(value, 4) for key, value in result.items() if MODALITY_KEY.match(key)})
    row["hann_low"] = ct_level_scores(model, ct_images).get("hann_low")
    return row


def scored_with_float(model: nn.Module, members: list[str], kinds: tuple[str, ...], score) -> dict:
    """``score(model)`` with the ``kinds`` quantizers of every module in ``members`` off."""
    with contextlib.ExitStack() as stack:
        for name in members:
            stack.enter_context(float_module(model, name, kinds))
        return score(model)


def main(argv: list[str] | None = None) -> int:
    parser = validation_parser("python -m trainer.quant_sensitivity", __doc__, "QAT checkpoints (.pt)")
    parser.add_argument("--depth", type=int, default=2,
                        help="group modules by this many dotted name parts (default 2: 'up.0', 'down.1'; "
                        "a large value scores every conv alone)")
    parser.add_argument("--only", default=None,
                        help="regular expression: score only the groups whose name matches")
    parser.add_argument("--split", action="store_true",
                        help="also score each group with only its input / only its weight quantizers off")
    args = parser.parse_args(argv)
    if args.depth < 1:
        parser.error(f"--depth must be 1 or more, got {args.depth}")
    try:
        only = re.compile(args.only) if args.only else None
    except re.error as exc:
        parser.error(f"--only is not a regular expression: {exc}")
    if missing_inputs(args):
        return 2
    torch.set_num_threads(args.threads)
    models = []
    for path in args.checkpoints:
        try:
            model, ckpt = load_model(path)
        except (ValueError, KeyError, RuntimeError) as exc:
            print(f"error: {path}: cannot be loaded as a checkpoint ({exc})", file=sys.stderr)
            return 2
        if not ckpt.get("quantization"):
            print(f"error: {path}: not a QAT checkpoint (no quantization entry)", file=sys.stderr)
            return 2
        models.append((path, model))
    cfg = load_config(args.config)
    cfg.eval.max_images, cfg.eval.runtime_normalization = 0, True
    images = validation_images(cfg)
    ct_images = [image for image in images if image.modality == "CT"]

    def score(model: nn.Module) -> dict[str, float | None]:
        return scores(model, images, ct_images, cfg)

    kinds = list(QUANTIZER_KINDS) if args.split else ["all"]
    for path, model in models:
        base = score(model)
        print(json.dumps({"checkpoint": str(path), "group": None, **base}), flush=True)
        for group, members in module_groups(quantized_modules(model), args.depth).items():
            if only and not only.search(group):
                continue
            for kind in kinds:
                row = scored_with_float(model, members, QUANTIZER_KINDS[kind], score)
                gain = {f"gain_{key}": round(value - base[key], 4) for key, value in row.items()
                        if value is not None and base.get(key) is not None}
                print(json.dumps({"checkpoint": str(path), "group": group, "quantizers": kind, "members": members,
                                  **row, **gain}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
