"""Markdown tables, the targets section and the PSNR-against-noise plot of a dose-curve record
(benchmarks/dose_curve.py); ``write_section`` puts the Markdown between the ``dose-curve``
marker comments of a document (docs/BENCHMARKS.md)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import report
from benchmarks.markdown import md_table, section_markers, write_marked_section

SECTION = "dose-curve"
MARKERS = section_markers(SECTION)
MODALITY_ORDER = ("CT", "MR", "CR", "DX")
# PSNR key -> what it is scored on (CT keys for CT rows, "psnr" for every other modality)
WINDOWS = {
    "psnr_window": "CT, soft-tissue window W400/L40 ([-160, 240] HU)",
    "psnr_lung": "CT, lung window W1500/L-600 ([-1350, 150] HU)",
    "psnr_full": "CT, full range [-1024, 3071] HU",
    "psnr": "MR and X-ray, normalized image clipped to [0, 1]",
}
PANEL_TITLES = {"psnr_window": "soft tissue W400/L40", "psnr_lung": "lung W1500/L-600",
                "psnr_full": "full range", "psnr": "normalized [0, 1]"}


def cell_order(row: dict) -> tuple:
    """Sort key of a cell: modality, kernel, noise (low to high)."""
    modality = row["modality"]
    rank = MODALITY_ORDER.index(modality) if modality in MODALITY_ORDER else len(MODALITY_ORDER)
    return rank, modality, row.get("kernel") or "", row.get("noise") or 0.0


def level_text(row: dict) -> str:
    """The evaluation level in words: dose fraction, MR sigma or X-ray quanta."""
    level = row.get("level")
    if level is None or (isinstance(level, float) and math.isnan(level)):
        return row["degradation"]
    if row["modality"] == "CT":
        return f"dose {level:g}"
    return f"σ {level:g}" if row["modality"] == "MR" else f"{level:g} quanta"


def noise_text(row: dict) -> str:
    """The true noise: ``23.4 HU`` (CT, soft tissue) or ``2.05 %`` (of the normalized range)."""
    return f"{row['noise']:.1f} HU" if row["noise_unit"] == "HU" else f"{row['noise']:.2f} %"


def short_names(names: list[str]) -> str:
    """Image names without their package folder; several frames of one file as ``file (N frames)``."""
    frames: dict[str, int] = {}
    for name in names:
        base = name.split("/")[-1].split("#")[0]
        frames[base] = frames.get(base, 0) + 1
    return ", ".join(base if count == 1 else f"{base} ({count} frames)" for base, count in frames.items())


def cells(summary: list[dict]) -> list[dict[str, dict]]:
    """Summary rows grouped by cell (modality, degradation) as method -> row, in cell order."""
    grouped: dict[tuple[str, str], dict[str, dict]] = {}
    for row in summary:
        grouped.setdefault((row["modality"], row["degradation"]), {})[row["method"]] = row
    return sorted(grouped.values(), key=lambda methods: cell_order(next(iter(methods.values()))))


def _difference(methods: dict[str, dict], metric: str, ours: str | None, theirs: str | None) -> str | None:
    if ours in methods and theirs in methods and metric in methods[ours]:
        return f"{methods[ours][metric] - methods[theirs][metric]:+.2f}"
    return None


def window_table(record: dict, metric: str) -> str | None:
    """PSNR per method in one window, a row per cell, with the two target differences."""
    rows_of = [m for m in cells(record["summary"]) if metric in next(iter(m.values()))]
    if not rows_of:
        return None
    roles, methods = record["roles"], record["methods"]
    ct = metric != "psnr"
    headers = ["kernel" if ct else "modality", "level", "noise", *[m["title"] for m in methods],
               "INT8 − NLM (true σ)", "INT8 − FP32"]
    rows = []
    for by_method in rows_of:
        first = next(iter(by_method.values()))
        scores = [by_method[m["key"]][metric] if m["key"] in by_method else None for m in methods]
        rows.append([first["kernel"] if ct else first["modality"], level_text(first), noise_text(first),
                     *[None if s is None else f"{s:.2f}" for s in scores],
                     _difference(by_method, metric, roles.get("int8"), "nlm_oracle"),
                     _difference(by_method, metric, roles.get("int8"), roles.get("fp32"))])
    return f"**{WINDOWS[metric]}**, PSNR in dB\n\n" + md_table(headers, rows)


def targets_table(targets: list[dict]) -> str:
    """One row per target: cells met, the worst (or mean) difference, the limit and the status."""
    rows = []
    for t in targets:
        value = "n/a" if t["value_db"] is None else f"{t['value_db']:+.2f} dB"
        below = [] if t["on_mean"] else [c for c in t["cells"] if not c["met"]]
        misses = "; ".join(f"{c['kernel'] or c['modality']} {level_text(c)}: {c['margin_db']:+.2f}" for c in below)
        met = f"mean of {t['cells_total']}" if t["on_mean"] else f"{t['cells_met']} / {t['cells_total']}"
        rows.append([t["description"], met,
                     f"{'mean' if t['on_mean'] else 'worst'} {value}", f">= {t['limit_db']:+.1f} dB", t["status"],
                     misses or "—"])
    headers = ["target", "cells met", "INT8 − reference", "limit", "status", "cells below the limit (dB)"]
    return md_table(headers, rows)


def tuning_table(record: dict) -> str | None:
    """The strengths chosen per cell and what they were tuned on."""
    tuned = record["baseline_tuning"]
    if not isinstance(tuned, dict):
        return None
    rows = []
    for by_method in cells(record["summary"]):
        first = next(iter(by_method.values()))
        entry = tuned.get(f"{first['modality']}/{first['degradation']}", {})
        nlm, tv = entry.get("nlm", {}), entry.get("tv", {})
        strengths = lambda e: ", ".join(f"{v:g}" for v in (e.get("best") or {}).values()) or "default"  # noqa: E731
        rows.append([first["modality"], first["kernel"] or "—", level_text(first), strengths(nlm), strengths(tv),
                     f"{nlm.get('tuning_split', 'none').split()[0]}: {short_names(nlm.get('tuning_images', []))}"])
    return md_table(["modality", "kernel", "level", "NLM h/σ", "TV weight/σ", "tuned on"], rows)


def tuning_note(tuned: dict | str) -> str:
    """Where the baselines' strengths came from, in one sentence."""
    if not isinstance(tuned, dict):
        return "Their strengths are trainer.baselines' defaults (not tuned)."
    fallback = sorted({key.split("/")[0] for key, entry in tuned.items()
                       if str(entry.get("nlm", {}).get("tuning_split", "")).startswith("train")})
    where = f" ({', '.join(fallback)}: a training-image crop, no validation image)" if fallback else ""
    return (f"Their strengths were tuned on the validation split{where}, per window for CT (the lung-window "
            "numbers use the strength tuned for the lung window).")


def markdown(record: dict) -> str:
    """The dose curve as Markdown: one table per window, targets, tuned strengths, provenance."""
    machine, roles = record["machine"], record["roles"]
    models = "; ".join(f"{title} = `{record['roles'][role]}`" for role, title in
                       (("int8", "INT8"), ("fp32", "FP32"), ("teacher", "teacher")) if role in roles) or "none"
    for modality, by_precision in record.get("modality_models", {}).items():  # students routed by modality
        routed = ", ".join(f"{precision.upper()} `{Path(entry['file']['path']).name}`"
                           for precision, entry in sorted(by_precision.items(), reverse=True))
        models += f"; {modality} images by {routed}"
    split = record.get("split", "test")
    names = record[f"{split}_images"]
    parts = [f"{split.capitalize()} split: {len(names)} images ({short_names(names)}). Models: {models}. "
             f"Machine: {machine['cpu']}, {machine['usable_cores']} cores; {record['created_utc']}; "
             f"{record['timing_s']['total'] / 60:.1f} min. Noise: the true σ (CT: over soft tissue, HU; "
             "MR/X-ray: % of the normalized range). NLM (true σ) and TV are given the true σ, NLM (est. σ) "
             f"the runtime's estimate. {tuning_note(record['baseline_tuning'])}", ""]
    for metric in WINDOWS:
        table = window_table(record, metric)
        if table:
            parts += [table, ""]
    parts += ["**Targets** (issue 11; INT8 − reference per cell, PSNR dB)", "", targets_table(record["targets"]), ""]
    tuning = tuning_table(record)
    if tuning:
        parts += ["**Tuned baseline strengths** (multiples of σ; CT: soft-tissue, lung window)", "", tuning, ""]
    return "\n".join(parts).rstrip() + "\n"


def write_section(path: str | Path, text: str) -> Path:
    """Put ``text`` between the dose-curve MARKERS of ``path`` (see ``write_marked_section``)."""
    return write_marked_section(path, text, SECTION)


def plot(record: dict, path: str | Path) -> Path:
    """PSNR against the true noise, a line per method; a panel per modality, kernel and window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = cells(record["summary"])
    panels: dict[tuple, list[dict[str, dict]]] = {}
    for by_method in grouped:
        first = next(iter(by_method.values()))
        for metric in (m for m in WINDOWS if m in first):
            panels.setdefault((first["modality"], first["kernel"], metric), []).append(by_method)
    columns = 3
    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.6 * rows), squeeze=False)
    for axis, ((modality, kernel, metric), points) in zip(axes.flat, panels.items()):
        unit = next(iter(points[0].values()))["noise_unit"]
        for method in record["methods"]:
            xs = [p[method["key"]]["noise"] for p in points if method["key"] in p]
            ys = [p[method["key"]][metric] for p in points if method["key"] in p]
            axis.plot(xs, ys, marker="o", markersize=3, label=method["title"])
        noise = sorted({row["noise"] for p in points for row in p.values()})
        axis.set_xscale("log")
        axis.set_xticks(noise, [f"{x:.3g}" for x in noise])
        axis.minorticks_off()
        axis.set_xlabel(f"true noise σ ({'HU, soft tissue' if unit == 'HU' else '% of the normalized range'})")
        axis.set_ylabel("PSNR (dB)")
        axis.set_title(f"{modality}{f' {kernel}' if kernel else ''}: {PANEL_TITLES[metric]}", fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    machine = record["machine"]
    fig.suptitle(f"medclear dose curve ({record.get('split', 'test')} split) — {machine['cpu']}, "
                 f"{record['created_utc'][:10]}", fontsize=10)
    return report.save_figure(fig, path, dpi=90)
