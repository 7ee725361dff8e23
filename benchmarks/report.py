"""Terminal tables and PNG charts of benchmark records."""

from __future__ import annotations

from pathlib import Path


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def format_cell(value: object) -> str:
    """A number or value as table text: 3 significant digits, n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace("-", "", 1).replace("e", "", 1).isdigit()


def _stage(row: dict, name: str) -> float | None:
    stage = row["stages"].get(name)
    return stage["p50_ms"] if stage else None


def latency_line(row: dict) -> str:
    """One progress line per measured configuration."""
    return (f"{row['model']:<32} {row['size']:>5}^2 b{row['batch']:<2} p50 {row['p50_ms']:9.2f} ms "
            f"({row['images_per_s']:.1f} img/s, {row['runs']} runs)")


def dicom_line(entry: dict) -> str:
    """One progress line per DICOM end-to-end measurement."""
    value = f"{entry['p50_s']:.3f} s" if entry.get("p50_s") is not None else f"failed: {entry.get('error')}"
    return f"{entry['model']:<32} DICOM {entry['input']}: {value}"


def process_line(cold: dict, memory: dict) -> str:
    """One progress line per model's cold start and peak memory."""
    c = f"{cold['wall_s']:.2f} s" if cold.get("wall_s") is not None else f"failed: {cold.get('error')}"
    m = f"{memory['peak_rss_mb']:.0f} MB" if memory.get("peak_rss_mb") is not None else f"failed: {memory.get('error')}"
    return f"{cold['model']:<32} cold start {c}; peak RSS on 2k X-ray {m}"


def latency_report(record: dict) -> str:
    """The latency benchmark's terminal report."""
    ceiling = record["matmul_ceiling"]
    parts = [f"machine: {record['machine']['cpu']}, {record['machine']['usable_cores']} cores, {record['machine']['os']}",
             f"matmul ceiling: {ceiling['gflops']:.1f} GFLOP/s (float32, {ceiling['threads']} threads)", ""]
    rows = [[r["model"], r["kind"], f"{r['size']}^2", r["batch"], r["runs"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
             r["per_image_p50_ms"], r["images_per_s"], _stage(r, "preprocess"), _stage(r, "h2d"), _stage(r, "compute"),
             _stage(r, "d2h"), _stage(r, "postprocess"), r["achieved_gflops"],
             f"{r['achieved_gflops'] / ceiling['gflops']:.0%}" if r["achieved_gflops"] else None,
             r.get("ceiling_bound_ms")]
            for r in record["latency"]]
    parts.append(table(["model", "backend", "size", "N", "runs", "p50 ms", "p95 ms", "p99 ms", "ms/img", "img/s",
                        "pre", "h2d", "compute", "d2h", "post", "GFLOP/s", "of ceil", "bound ms"], rows))
    for skip in record.get("skipped", []):
        parts.append(f"skipped {skip['model']}: {skip['reason']}")
    if record.get("dicom_end_to_end"):
        parts += ["", table(["model", "DICOM input", "runs", "p50 s", "read", "prepare", "infer", "restore", "write"],
                            [[d["model"], d["input"], d.get("runs"), d.get("p50_s"),
                              *[d.get("stages_p50_ms", {}).get(s) for s in ("read", "prepare", "infer", "restore", "write")]]
                             for d in record["dicom_end_to_end"]])]
        parts.append("(stage columns: p50 ms)")
    processes = record.get("processes") or {}
    if processes:
        parts += ["", f"python startup alone: {processes['python_startup_s']:.2f} s",
                  table(["model", "cold start s", "peak RSS MB (2k X-ray)"],
                        [[c["model"], c["wall_s"], m["peak_rss_mb"]]
                         for c, m in zip(processes["cold_start"], processes["peak_memory"])])]
    parts += ["", targets_table(record["targets"])]
    if record.get("claims"):
        parts += ["", table(["seed claim", "measured here", "status"],
                            [[c["claim"], c["measured"], c["status"]] for c in record["claims"]])]
    return "\n".join(parts)


def targets_table(targets: list[dict]) -> str:
    """Targets with pass/miss and margin."""
    return table(["target", "subject", "status", "margin / note"],
                 [[t.get("description", t["key"]), t["subject"], t["status"], t["note"]] for t in targets])


def plot_latency(record: dict, path: Path) -> Path:
    """Per-image p50 latency and images/s against image size, one line per model and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[str, int], list[dict]] = {}
    for row in record["latency"]:
        series.setdefault((row["model"], row["batch"]), []).append(row)
    for (model, batch), rows in sorted(series.items()):
        rows.sort(key=lambda r: r["size"])
        sizes = [r["size"] for r in rows]
        left.plot(sizes, [r["per_image_p50_ms"] for r in rows], marker="o", label=f"{model} b{batch}")
        right.plot(sizes, [r["images_per_s"] for r in rows], marker="o", label=f"{model} b{batch}")
    sizes = sorted({row["size"] for row in record["latency"]})
    for axis, label in ((left, "p50 ms per image"), (right, "images / s")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.minorticks_off()
        axis.set_yscale("log")
        axis.set_xlabel("image side (pixels)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    machine = record["machine"]
    fig.suptitle(f"medclear latency — {machine['cpu']}, {machine['usable_cores']} cores")
    return save_figure(fig, path, dpi=100)


def save_figure(fig, path: str | Path, dpi: int, title_inches: float = 0.0) -> Path:
    """Lay out (keeping ``title_inches`` at the top free for a suptitle), save (creating the
    folder) and close a matplotlib figure."""
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - title_inches / fig.get_figheight()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
