"""``python -m benchmarks.markdown RESULT.json ...``: Markdown tables of benchmark records, for
pasting the measured numbers into docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.report import format_cell


def md_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def latency_markdown(record: dict) -> str:
    """Latency rows, DICOM end to end, processes, targets and claims."""
    machine, ceiling = record["machine"], record["matmul_ceiling"]
    parts = [f"Machine: {machine['cpu']}, {machine['usable_cores']} cores, onnxruntime "
             f"{record['libraries'].get('onnxruntime')}, torch {record['libraries'].get('torch')}; "
             f"matmul ceiling {ceiling['gflops']:.1f} GFLOP/s ({ceiling['threads']} threads); {record['created_utc']}.", ""]
    parts.append(md_table(
        ["model", "size", "N", "p50 ms", "p95 ms", "p99 ms", "img/s", "pre ms", "compute ms", "post ms", "GFLOP/s",
         "of ceiling", "bound ms"],
        [[r["model"], r["size"], r["batch"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["images_per_s"],
          r["stages"].get("preprocess", {}).get("p50_ms"), r["stages"]["compute"]["p50_ms"],
          r["stages"].get("postprocess", {}).get("p50_ms"), r["achieved_gflops"],
          f"{r['achieved_gflops'] / ceiling['gflops']:.0%}" if r["achieved_gflops"] else None, r.get("ceiling_bound_ms")]
         for r in record["latency"]]))
    if record.get("dicom_end_to_end"):
        parts += ["", md_table(["model", "DICOM input", "p50 s", "read ms", "prepare ms", "infer ms", "restore ms", "write ms"],
                               [[d["model"], d["input"], d.get("p50_s"),
                                 *[(d.get("stages_p50_ms") or {}).get(s) for s in ("read", "prepare", "infer", "restore", "write")]]
                                for d in record["dicom_end_to_end"]])]
    processes = record.get("processes") or {}
    if processes:
        parts += ["", md_table(["model", "cold start s", "peak RSS MB (2k X-ray)"],
                               [[c["model"], c["wall_s"], m["peak_rss_mb"]]
                                for c, m in zip(processes["cold_start"], processes["peak_memory"])])]
    parts += ["", md_table(["target", "subject", "status", "measured / margin"],
                           [[t.get("description", t["key"]), t["subject"], t["status"], t["note"]] for t in record["targets"]])]
    parts += ["", md_table(["seed claim", "measured here", "status"],
                           [[c["claim"], c["measured"], c["status"]] for c in record.get("claims", [])])]
    return "\n".join(parts)


def quality_markdown(record: dict) -> str:
    """Mean scores per modality, degradation and method."""
    keys = sorted({k for row in record["summary"] for k in row if k.split("_")[0] in ("psnr", "ssim", "fsim")})
    return md_table(["modality", "degradation", "method", "n", *keys],
                    [[r["modality"], r["degradation"], r["method"], r["images"], *[r.get(k) for k in keys]]
                     for r in record["summary"]])


def main(argv: list[str] | None = None) -> int:
    """Print Markdown for each JSON record named on the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.markdown", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("records", nargs="+", type=Path, metavar="RESULT.json", help="latency, quality or dose-curve JSON record")
    for path in parser.parse_args(argv).records:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"markdown: error: {path}: cannot read a JSON record ({error})", file=sys.stderr)
            return 2
        from benchmarks.dose_report import markdown as dose_curve_markdown

        render = {"latency": latency_markdown, "quality": quality_markdown,
                  "dose_curve": dose_curve_markdown}.get(record.get("benchmark"))
        if render is None:
            print(f"markdown: error: {path}: not a latency, quality or dose-curve record", file=sys.stderr)
            return 2
        print(render(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
