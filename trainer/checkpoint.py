"""Checkpoints: weights plus everything needed to rebuild and describe the model.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)``: only tensors and plain Python data. Keys:
``format``, ``model_name``, ``model_kwargs``, ``state_dict``, ``config``, ``data_summary``,
``normalization``, ``modalities``, ``quantization``, ``stage``, ``metrics``, ``step``, and for
resuming ``optimizer``, ``scheduler``, ``scaler``, ``rng``, ``extra_modules``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from runtime.outputs import atomic_write
from trainer.models import create_model

FORMAT = "medclear-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **info) -> dict:
    """Write ``model``'s weights and ``info`` atomically to ``path``; returns the saved dict."""
    ckpt = {
        "format": FORMAT,
        "model_name": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "quantization": None,
    }
    ckpt.update(info)
    # An interrupted save never leaves a half-written checkpoint.
    atomic_write(Path(path), lambda handle: torch.save(ckpt, handle))
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint (``weights_only=True``) and check its format."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ValueError(f"{path}: not a readable medclear checkpoint ({type(exc).__name__}: {first_line})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: unknown checkpoint format {found!r} (expected {FORMAT!r})")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the model of a loaded checkpoint: create, re-insert quantizers, load weights, eval."""
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    if ckpt.get("quantization"):
        from trainer.qat import restore_quantized

        model = restore_quantized(model, ckpt["quantization"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path`` (QAT quantizers included) in eval mode, with its checkpoint."""
    ckpt = load_checkpoint(path)
    try:
        return model_from_checkpoint(ckpt), ckpt
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot rebuild the model ({type(exc).__name__}: {exc})") from None


RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "extra_modules")


def slim_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> dict:
    """Copy a checkpoint without its resume state (optimizer, RNG, ...): what ships in models/.
    The result loads with :func:`load_model` exactly like the source."""
    ckpt = {k: v for k, v in load_checkpoint(source).items() if k not in RESUME_KEYS}
    atomic_write(Path(target), lambda handle: torch.save(ckpt, handle))
    return ckpt


def float_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> dict:
    """The float weights of a QAT checkpoint as a float (distill-stage) checkpoint: the quantizers'
    ranges are dropped, every weight is kept. What the FP32 ONNX of a QAT model computes, and a
    float start (``--init`` of a distill stage, ``--student`` of a qat stage) when the float
    student it came from is gone. ``config`` and ``data_summary`` stay the source's; its scores
    move to ``source_metrics`` (they are the quantized model's, not these weights')."""
    ckpt = load_checkpoint(source)
    if not ckpt.get("quantization"):
        raise ValueError(f"{source}: is not a QAT checkpoint (no quantization entry)")
    names = set(create_model(ckpt["model_name"], **ckpt["model_kwargs"]).state_dict())
    missing = names - set(ckpt["state_dict"])
    if missing:
        raise ValueError(f"{source}: lacks weights the float model needs: {', '.join(sorted(missing))}")
    kept = {k: v for k, v in ckpt.items() if k not in RESUME_KEYS}
    kept.update(state_dict={k: v for k, v in ckpt["state_dict"].items() if k in names}, quantization=None,
                stage="distill", float_of=str(source), metrics={}, source_metrics=ckpt.get("metrics"))
    atomic_write(Path(target), lambda handle: torch.save(kept, handle))
    return kept


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainer.checkpoint", description="Checkpoint utilities.")
    commands = parser.add_subparsers(dest="command", required=True)
    slim = commands.add_parser("slim", help="copy SOURCE to TARGET without optimizer/RNG resume state")
    slim.add_argument("source")
    slim.add_argument("target")
    to_float = commands.add_parser("float", help="write the float weights of the QAT checkpoint SOURCE to TARGET "
                                   "(quantizers dropped): a float start for a distill (--init) or qat "
                                   "(--student) stage")
    to_float.add_argument("source")
    to_float.add_argument("target")
    fixed = commands.add_parser("fixed", help="save the registered model MODEL with no trained weights (a fixed "
                                "classical operator such as sr2_dct_zero_fill) to TARGET: a --teacher to distil")
    fixed.add_argument("model")
    fixed.add_argument("target")
    args = parser.parse_args()
    try:
        if args.command == "fixed":
            from trainer.models import create_model

            fixed_model = create_model(args.model)
            if any(True for _ in fixed_model.parameters()):
                parser.error(f"{args.model} has trainable weights; 'fixed' saves operators without weights only")
            save_checkpoint(args.target, fixed_model, stage="fixed")
        else:
            (slim_checkpoint if args.command == "slim" else float_checkpoint)(args.source, args.target)
    except (OSError, ValueError) as error:  # a missing file, a checkpoint of the wrong kind, an unknown model
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.target}")
