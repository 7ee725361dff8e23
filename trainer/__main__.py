"""Command line: ``python -m trainer teacher|distill|qat --config FILE --out DIR [...]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STAGE_HELP = {
    "teacher": "train the U-Net++ teacher on (degraded, clean) patches with the reconstruction loss",
    "distill": "train the small student with the reconstruction loss plus knowledge distillation "
    "from a frozen teacher (needs --teacher CKPT)",
    "qat": "quantization-aware training: insert INT8 quantizers (NVIDIA ModelOpt) into a distilled "
    "student, calibrate on training patches, fine-tune at a lower LR, report FP32 vs QAT held-out "
    "PSNR (needs --student CKPT)",
}

DESCRIPTION = """Train medclear models, one stage at a time:

  teacher   {teacher}
  distill   {distill}
  qat       {qat}

Each stage writes OUT/best.pt (best held-out PSNR), OUT/last.pt (for --resume) and
OUT/log.jsonl. Configs are JSON files (trainer/configs/); --set overrides single values.

Example:
  python -m trainer teacher --config trainer/configs/default_teacher.json --out runs/teacher
  python -m trainer distill --config trainer/configs/default_distill.json --out runs/distill \\
      --teacher runs/teacher/best.pt
  python -m trainer qat --config trainer/configs/default_qat.json --out runs/qat \\
      --student runs/distill/best.pt --set train.steps=200
""".format(**STAGE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=text, description=text)
        p.add_argument("--config", required=True, help="JSON config file (see trainer/configs/)")
        p.add_argument("--out", default=f"runs/{stage}", help="output directory (default: runs/STAGE)")
        p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (optimizer, LR schedule, step, RNG)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.steps=20 (value parsed as JSON); repeatable")
        if stage in ("teacher", "distill"):
            p.add_argument("--init", metavar="CKPT",
                           help="start from this float checkpoint's model and weights (fine-tuning: fresh "
                                "optimizer and LR schedule; its model spec replaces the config's)")
        if stage == "distill":
            p.add_argument("--teacher", help="teacher checkpoint (required unless resuming)")
        if stage == "qat":
            p.add_argument("--student", help="distilled student checkpoint (required unless resuming)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainer.config import load_config
    from trainer.train import train

    last = Path(args.out) / "last.pt"
    before = last.stat().st_mtime_ns if last.exists() else None  # an earlier run's, if any
    try:
        cfg = load_config(args.config, args.overrides, stage=args.stage)
        if not args.resume and before is not None:
            print(f"note: {args.out} holds an earlier run; starting over (its checkpoints and log are replaced; "
                  "--resume continues it instead)", file=sys.stderr)
        result = train(cfg, args.out, resume=args.resume, teacher=getattr(args, "teacher", None),
                       student=getattr(args, "student", None), init=getattr(args, "init", None))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = last.exists() and last.stat().st_mtime_ns != before  # written by this run
        print(f"interrupted: {last} holds the last step; --resume continues from it" if saved
              else "interrupted before this run's first checkpoint", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
