"""Quality against cost of distilled students, and the choice of the one to ship.

    python scripts/pareto_students.py RUN_DIR... [--out models/pareto.json] [--tolerance-db 0.2]

Each RUN_DIR holds a distillation run (best.pt). For each student this reads its parameters,
GFLOP per 512x512 slice and the *validation* PSNR that chose its best.pt, and picks the
smallest student (fewest GFLOP) whose validation PSNR is within ``--tolerance-db`` of the best
student's: more compute than that buys less than the run-to-run noise of this measurement.
Test-split numbers never enter the choice; benchmarks.quality reports them afterwards.
Prints the chosen run directory on the last line (for scripts/reproduce_default_model.sh).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.checkpoint import load_model
from trainer.models import count_flops


def describe(run: Path) -> dict:
    """Size, cost and validation score of the student in ``run``/best.pt."""
    model, ckpt = load_model(run / "best.pt")
    metrics = ckpt.get("metrics", {}).get("validation", {})
    return {
        "run": str(run),
        "model": ckpt["config"]["model"],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflop_512": count_flops(model) / 1e9,
        "validation_psnr": metrics.get("psnr"),
        "validation_ssim": metrics.get("ssim"),
        "step": ckpt.get("step"),
    }


def choose(students: list[dict], tolerance_db: float) -> dict:
    """The cheapest student within ``tolerance_db`` of the best validation PSNR."""
    best = max(s["validation_psnr"] for s in students)
    eligible = [s for s in students if s["validation_psnr"] >= best - tolerance_db]
    return min(eligible, key=lambda s: s["gflop_512"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="distillation run folders (each with best.pt)")
    parser.add_argument("--out", type=Path, default=Path("models/pareto.json"))
    parser.add_argument("--tolerance-db", type=float, default=0.2)
    args = parser.parse_args()
    students = sorted((describe(run) for run in args.runs), key=lambda s: s["gflop_512"])
    chosen = choose(students, args.tolerance_db)
    for s in students:
        mark = "*" if s is chosen else " "
        print(f"{mark} {s['run']}: {s['params_m']:.3f}M params, {s['gflop_512']:.1f} GFLOP/512², "
              f"validation PSNR {s['validation_psnr']:.2f} dB (step {s['step']})")
    record = {"rule": f"fewest GFLOP within {args.tolerance_db} dB of the best validation PSNR",
              "students": students, "chosen": chosen["run"]}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(chosen["run"])


if __name__ == "__main__":
    main()
