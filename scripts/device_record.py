"""Summarize one lent-GPU call of scripts/device_train.sh into a JSON record.

    python scripts/device_record.py RUNS_DIR --out benchmarks/gpu_session_record.json

RUNS_DIR holds what the call returned, unpacked: gpu_tests.log and one folder per run with
its log.jsonl. The record keeps the machine lines, the CUDA test summary and, per run, its
throughput and the validation scores of its first and best evaluations (no test split here).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def _scores(evaluation: dict) -> dict[str, float]:
    """Mean and per-modality PSNR of one evaluation (inputs' own PSNR left out)."""
    return {key: round(value, 3) for key, value in evaluation.items()
            if key.startswith("psnr") and not key.startswith("psnr_input")}


def summarize_run(log_path: Path) -> dict:
    """Config, throughput and first/best validation of one training log."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    start = next(line for line in lines if line.get("event") == "start")
    evaluations = [line for line in lines if line.get("eval")]
    rates = [line["steps_per_s"] for line in lines if "steps_per_s" in line]
    steps = [line["step"] for line in lines if "step" in line]
    config = start["config"]
    scores = None
    if evaluations:  # a run killed before its first evaluation has none
        best = max(evaluations, key=lambda line: line["eval"]["psnr"])
        scores = {"first_eval": {"step": evaluations[0]["step"], **_scores(evaluations[0]["eval"])},
                  "best_eval": {"step": best["step"], **_scores(best["eval"])}}
    return {
        "stage": config["stage"],
        "model": config["model"],
        "init": start.get("init"),
        "batch_size": config["train"]["batch_size"],
        "lr": config["train"]["lr"],
        "num_workers": config["train"]["num_workers"],
        "max_minutes": config["train"]["max_minutes"],
        "steps": max(steps) if steps else 0,
        "steps_per_s": round(rates[-1], 1) if rates else None,
        **(scores or {"first_eval": None, "best_eval": None}),
    }


def summarize_tests(log_text: str) -> dict:
    """The GPU/driver/library lines and pytest's summary from gpu_tests.log."""
    gpu = re.search(r"\|\s+\d+\s+(NVIDIA [^|]+?)\s{2,}", log_text)
    driver = re.search(r"Driver Version: (\S+)\s+CUDA Version: (\S+)", log_text)
    libraries = re.search(r"^torch .*$", log_text, re.M)
    bindings = re.search(r"^cuda-bindings (\S+)$", log_text, re.M)
    summary = re.search(r"^(\d+ (?:failed|passed|skipped|errors?|deselected)\b.*?) in [\d.]+s\b", log_text, re.M)
    return {
        "gpu": gpu.group(1).strip() if gpu else None,
        "driver": driver.group(1) if driver else None,
        "cuda": driver.group(2) if driver else None,
        "libraries": libraries.group(0) if libraries else None,
        "cuda_bindings": bindings.group(1) if bindings else None,
        "pytest": summary.group(1) if summary else None,
        "skipped": re.findall(r"^SKIPPED \[\d+\] (.*)$", log_text, re.M),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder holding gpu_tests.log and one folder per run")
    parser.add_argument("--out", type=Path, required=True, help="JSON record to write")
    parser.add_argument("--note", default="", help="free text kept in the record (e.g. the date and call)")
    args = parser.parse_args()
    runs = {log.parent.name: summarize_run(log) for log in sorted(args.runs.glob("*/log.jsonl"))}
    record = {"note": args.note, "tests": summarize_tests((args.runs / "gpu_tests.log").read_text()), "runs": runs}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}: {len(runs)} runs")


if __name__ == "__main__":
    main()
