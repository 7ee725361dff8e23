"""Write models/MODEL_CARD.md and models/model_card.json from the files a reproduction made.

Every number comes from a file: the checkpoints (config, data summary, held-out metrics), the
quality record of ``python -m benchmarks.quality`` and the latency record of
``python -m benchmarks.latency``. Nothing is typed in by hand.

    python scripts/make_model_card.py --run runs/default --quality models/quality.json \
        --latency models/latency.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import dose_report
from benchmarks.markdown import latency_markdown, md_table
from runtime.engine_sidecar import sha256_file
from trainer.checkpoint import load_checkpoint
from trainer.models import count_flops, count_parameters, create_model

MODELS = Path("models")
FILES = ["medclear_student.fp32.onnx", "medclear_student.int8.onnx", "medclear_student.qat.pt", "medclear_teacher.pt"]
REPRODUCE = "bash scripts/reproduce_default_model.sh"


def _stage(run: Path, stage: str) -> dict:
    info = load_checkpoint(run / stage / "best.pt")
    model = create_model(info["model_name"], **info["model_kwargs"])
    return {
        "model": info["model_name"],
        "kwargs": info["model_kwargs"],
        "parameters": count_parameters(model),
        "gflop_512": round(count_flops(model, (1, 1, 512, 512)) / 1e9, 2),
        "step": info.get("step"),
        "metrics": info.get("metrics"),
        "config": info.get("config"),
        "data_summary": info.get("data_summary"),
    }


def _pareto_rows(pareto: dict | None) -> list[list]:
    """One row per distilled student size: cost and the validation PSNR that chose among them."""
    if not pareto:
        return []
    return [[(f"**{Path(s['run']).name}**" if s["run"] == pareto["chosen"] else Path(s["run"]).name), json.dumps(s["model"]["kwargs"]["widths"]),
             f"{s['params_m']:.3f}", f"{s['gflop_512']:.1f}", f"{s['validation_psnr']:.2f}"] for s in pareto["students"]]


def build_card(run: Path, quality: dict, latency: dict | None, pareto: dict | None = None) -> tuple[str, dict]:
    """The Markdown card and its JSON twin."""
    names = ("teacher", "student", "finetune", "qat")  # finetune: optional (earlier recipes had none)
    stages = {stage: _stage(run, stage) for stage in names if (run / stage / "best.pt").is_file()}
    files = {name: {"sha256": sha256_file(MODELS / name), "bytes": (MODELS / name).stat().st_size}
             for name in FILES if (MODELS / name).is_file()}
    data = stages["qat"]["data_summary"] or {}
    card_json = {"name": "medclear_student", "stages": {k: {x: v[x] for x in v if x != "config"} for k, v in stages.items()},
                 "configs": {k: v["config"] for k, v in stages.items()}, "files": files,
                 "quality": quality["summary"], "quality_targets": quality.get("targets"),
                 "quality_machine": quality.get("machine"), "pareto": pareto,
                 "latency_targets": (latency or {}).get("targets"), "reproduce": REPRODUCE}
    teacher, student = stages["teacher"], stages["qat"]
    lines = [
        "# medclear_student — model card",
        "",
        "A small residual denoiser for CT, MR and X-ray (CR/DX), blind over the whole noise range users",
        "scan at (CT 3-70 % dose through four reconstruction kernels, MR Rician 0.7-10 %, X-ray quantum",
        "noise at 150-6000 quanta), distilled from a U-Net++ teacher and trained quantization-aware (INT8,",
        f"NVIDIA ModelOpt). Made with the project's own commands by `{REPRODUCE}`; every number below is",
        "read from the files that run wrote (`scripts/make_model_card.py`).",
        "",
        "## Files",
        md_table(["file", "bytes", "sha256"], [[k, v["bytes"], v["sha256"][:16] + "…"] for k, v in files.items()]),
        "",
        "## Models",
        md_table(
            ["stage", "model", "kwargs", "parameters", "GFLOP per 512² slice", "best.pt at step (of)"],
            [[k, v["model"], json.dumps(v["kwargs"]), v["parameters"], v["gflop_512"],
              f"{v['step']} ({(v['config'] or {}).get('train', {}).get('steps', '?')})"] for k, v in stages.items()],
        ),
        "",
        f"The teacher is U-Net++ at a reduced width for CPU training ({json.dumps(teacher['kwargs'])}); the paper's",
        "widths (32..512) give 9.2M parameters and 276 GFLOP per 512² slice. The student has",
        f"{student['parameters']:,} parameters and {student['gflop_512']} GFLOP per 512² slice: "
        f"{teacher['gflop_512'] / student['gflop_512']:.1f}× fewer FLOPs than this teacher,",
        f"{275.58 / student['gflop_512']:.0f}× fewer than the paper-width teacher.",
        "",
        "## Data",
        f"- Sources: {', '.join(map(str, data.get('sources', [])))}; modalities {', '.join(map(str, data.get('modalities', [])))};",
        "  degradations: projection-domain low-dose CT, Rician MR and Poisson-Gaussian X-ray noise (docs/DATA.md).",
        f"- Validation split (chose every best.pt and the student size): "
        f"{', '.join(map(str, (data.get('validation') or {}).get('names', [])))}.",
        f"- Test split (only reported): {', '.join(map(str, (data.get('heldout') or {}).get('names', [])))}.",
        "- Full data summary: `model_card.json` → `stages.qat.data_summary`.",
        "",
        "## Student size: quality against cost (validation split)",
        "Distilled from the same teacher with the same recipe; the chosen one (bold) has the",
        f"{(pareto or {}).get('rule', '?')}.",
        "",
        md_table(["run", "widths", "parameters (M)", "GFLOP per 512²", "validation PSNR (dB)"], _pareto_rows(pareto)),
        "",
        "## Quality on the test split: the dose curve",
        dose_report.markdown(quality),
        "",
        f"Quality measured on: {quality.get('machine', {}).get('cpu', '?')}, {quality.get('created_utc', '?')}.",
        "",
    ]
    if latency:
        lines += ["## Latency on the machine that made it", latency_markdown(latency), ""]
    lines += [
        "## Command lines",
        "```bash",
        *[line for line in Path("scripts/reproduce_default_model.sh").read_text().splitlines()
          if line.strip().startswith(('"$PY"', "--", "cp "))],
        "```",
        "",
        "## Limits",
        "- Trained on a handful of real CT/MR/CR images (those shipped in pydicom and pydicom-data) plus",
        "  synthetic phantoms, on a 2-core CPU: a demonstration model, not a clinically validated one.",
        "- Low dose and X-ray exposure are simulated (docs/DATA.md); real-CT references are full-dose scans",
        "  with their own noise; no real low/full-dose pairs were available here.",
        "- The test split is one MR slice, one radiograph and six CT slices at several levels each; there is no",
        "  X-ray validation image (X-ray never influenced model selection).",
        "- Earlier recipe choices (CT normalization range, full resolution, feature KD) were made on the then",
        "  held-out set, which is today's test split.",
        "",
    ]
    return "\n".join(lines), card_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="folder with teacher/, student/, [finetune/,] qat/")
    parser.add_argument("--quality", type=Path, required=True, help="benchmarks.quality JSON")
    parser.add_argument("--latency", type=Path, help="benchmarks.latency JSON")
    parser.add_argument("--pareto", type=Path, default=MODELS / "pareto.json", help="scripts/pareto_students.py JSON")
    args = parser.parse_args()
    quality = json.loads(args.quality.read_text())
    latency = json.loads(args.latency.read_text()) if args.latency and args.latency.is_file() else None
    pareto = json.loads(args.pareto.read_text()) if args.pareto.is_file() else None
    markdown, card = build_card(args.run, quality, latency, pareto)
    (MODELS / "MODEL_CARD.md").write_text(markdown)
    (MODELS / "model_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    print(f"wrote {MODELS / 'MODEL_CARD.md'} and {MODELS / 'model_card.json'}")


if __name__ == "__main__":
    main()
