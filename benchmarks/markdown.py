"""``python -m benchmarks.markdown RESULT.json ... [--into DOC.md]``: Markdown tables of benchmark
records, printed or written into a document between the record's marker comments (e.g.
``<!-- latency:begin -->`` … ``<!-- latency:end -->`` in docs/BENCHMARKS.md), so that measured
numbers in the docs are generated from their record, never typed."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.report import format_cell
from runtime.outputs import atomic_write


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
    if record.get("skipped"):  # models this machine cannot run, sizes/batches outside an engine's profile
        parts += ["", md_table(["not measured", "reason"], [[s["model"], s["reason"]] for s in record["skipped"]])]
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


def render(record: dict) -> str:
    """The Markdown of a latency, quality, dose-curve or super-resolution record; ValueError otherwise."""
    from benchmarks.dose_report import markdown as dose_curve_markdown  # they import this module
    from benchmarks.super_resolution import markdown as super_resolution_markdown

    renderers = {"latency": latency_markdown, "quality": quality_markdown, "dose_curve": dose_curve_markdown,
                 "super_resolution": super_resolution_markdown}
    kind = record.get("benchmark") if isinstance(record, dict) else None
    if kind not in renderers:
        raise ValueError("not a latency, quality, dose-curve or super-resolution record")
    return renderers[kind](record)


def section_name(record: dict) -> str:
    """The marker name a record's section goes under: its benchmark, e.g. ``dose-curve``; a record
    of another split than the test split gets its own, e.g. ``dose-curve-validation``, so it never
    replaces the test split's tables."""
    split = record.get("split", "test")
    return str(record["benchmark"]).replace("_", "-") + ("" if split == "test" else f"-{split}")


def section_markers(name: str) -> tuple[str, str]:
    """The comment lines that open and close a generated section, e.g. ``<!-- latency:begin -->``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _section_pattern(name: str) -> re.Pattern[str]:
    # A marker counts only on a line of its own, so prose that quotes it is left alone.
    begin, end = (re.escape(marker) for marker in section_markers(name))
    return re.compile(rf"^{begin}\n(.*?)\n?^{end}$", re.MULTILINE | re.DOTALL)


def read_marked_section(path: str | Path, name: str) -> str | None:
    """What stands between ``name``'s markers in ``path``; None when the file has no such section."""
    match = _section_pattern(name).search(Path(path).read_text())
    return match.group(1) if match else None


def write_marked_section(path: str | Path, text: str, name: str) -> Path:
    """Replace what stands between ``name``'s markers in ``path`` by ``text`` (appended with the
    markers when the file has none)."""
    path = Path(path)
    document = path.read_text() if path.is_file() else ""
    begin, end = section_markers(name)
    section = f"{begin}\n{text.rstrip()}\n{end}"
    pattern = _section_pattern(name)
    if pattern.search(document):
        document = pattern.sub(lambda _: section, document, count=1)
    else:
        document = document.rstrip() + ("\n\n" if document else "") + section + "\n"
    atomic_write(path, lambda handle: handle.write(document.encode()))
    return path


def main(argv: list[str] | None = None) -> int:
    """Print (or write ``--into`` a document) the Markdown of each JSON record named."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.markdown", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("records", nargs="+", type=Path, metavar="RESULT.json", help="latency, quality, dose-curve or super-resolution JSON record")
    parser.add_argument("--into", type=Path, metavar="DOC.md",
                        help="write each record's tables between its <!-- NAME:begin/end --> markers in DOC.md "
                             "(NAME: latency, quality, dose-curve, super-resolution; appended with the markers where absent)")
    args = parser.parse_args(argv)
    for path in args.records:
        try:
            record = json.loads(path.read_text())
            text = render(record)
        except (OSError, json.JSONDecodeError) as error:
            print(f"markdown: error: {path}: cannot read a JSON record ({error})", file=sys.stderr)
            return 2
        except ValueError as error:
            print(f"markdown: error: {path}: {error}", file=sys.stderr)
            return 2
        if args.into is None:
            print(text + "\n")
        else:
            write_marked_section(args.into, text, section_name(record))
            print(f"wrote {args.into} ({section_name(record)} section, from {path})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
