"""``analyze``: the CSV exports, the plots and the markdown report of a study's answers.

Writes into the output folder (default STUDY/analysis), each file atomically: answers.csv
(reader, case, arm, item, score, time, answered_at), preferences.csv, scores.png,
preferences.png (when there are A/B answers) and report.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.markdown import md_table
from benchmarks.reader_study import analyze
from benchmarks.reader_study.manifest import Study
from benchmarks.reader_study.schedule import task_count
from benchmarks.reader_study.store import Store
from runtime.outputs import atomic_write


@dataclass
class Analysis:
    """The tables behind the report."""

    likert: pd.DataFrame
    preferences: pd.DataFrame
    means: pd.DataFrame
    wilcoxon: pd.DataFrame
    agreement: pd.DataFrame
    preference: pd.DataFrame


def run_analysis(study: Study, store: Store) -> Analysis:
    """Every statistic of the report, from the study's answers."""
    likert, preferences = analyze.likert_frame(study, store), analyze.preference_frame(study, store)
    arms = [arm.label for arm in study.arms]
    return Analysis(likert, preferences, analyze.mean_scores(likert), analyze.wilcoxon_tests(likert, arms),
                    analyze.agreement(likert), analyze.preference_summary(preferences))


def _interval(low: float, high: float) -> str:
    return f"{low:.2f} to {high:.2f}" if np.isfinite(low) and np.isfinite(high) else "n/a"


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def _plot(path: Path, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = draw(plt)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def scores_plot(means: pd.DataFrame, arms: list[str], items: list[str]):
    """Grouped bars: mean score per item and arm with the confidence interval."""
    def draw(plt):
        figure, axes = plt.subplots(figsize=(1.6 + 1.4 * len(items), 3.6))
        width = 0.8 / max(len(arms), 1)
        for index, arm in enumerate(arms):
            rows = means[means["arm"] == arm].set_index("item").reindex(items)
            x = [i + (index - (len(arms) - 1) / 2) * width for i in range(len(items))]
            errors = [(rows["mean"] - rows["ci_low"]).clip(lower=0), (rows["ci_high"] - rows["mean"]).clip(lower=0)]
            axes.bar(x, rows["mean"], width, yerr=errors, capsize=3, label=arm)
        axes.set_xticks(range(len(items)), items)
        axes.set_ylim(0, 5.5)
        axes.set_ylabel("mean score (1-5), 95% CI")
        axes.legend(fontsize=8, loc="lower right")
        return figure
    return draw


def preference_plot(summary: pd.DataFrame):
    """Stacked bars per arm pair: share won by each arm and no preference."""
    def draw(plt):
        figure, axes = plt.subplots(figsize=(6.4, 0.8 + 0.6 * len(summary)))
        labels = [f"{row.arm_a} vs {row.arm_b}" for row in summary.itertuples()]
        equal = summary["equal"] / summary["n"]
        axes.barh(labels, summary["share_a"], label="first preferred")
        axes.barh(labels, equal, left=summary["share_a"], color="lightgrey", label="no preference")
        axes.barh(labels, summary["share_b"], left=summary["share_a"] + equal, label="second preferred")
        axes.set_xlim(0, 1)
        axes.set_xlabel("share of A/B choices")
        axes.legend(fontsize=8, loc="lower right")
        return figure
    return draw


def report_markdown(study: Study, store: Store, result: Analysis) -> str:
    """The report's text."""
    arms = [arm.label for arm in study.arms]
    readers = store.readers()
    done = result.likert.groupby("reader").size() if len(result.likert) else pd.Series(dtype=int)
    parts = [
        "# Reader study report", "",
        f"{len(study.cases)} cases x {len(study.arms)} arms ({', '.join(arms)}), {len(readers)} readers; "
        f"randomisation seed {study.seed}; prepared {study.created}. Scores are 1-5, higher is better for every "
        "item. Raw answers: answers.csv and preferences.csv beside this file.", "",
        "## Readers", "",
        md_table(["reader", "Likert scores", "A/B choices", "tasks in the study"],
                 [[r.name, int(done.get(r.name, 0)), int((result.preferences["reader"] == r.name).sum()),
                  task_count(study)]
                  for r in readers]), "",
        "## Mean scores", "",
        "Mean per arm and item with a 95 % t interval over the reader x case ratings (they are taken as "
        "independent; a model with reader and case effects, e.g. Obuchowski-Rockette, gives wider intervals).", "",
        md_table(["arm", "item", "n", "mean", "SD", "95% CI"],
                 [[r.arm, r.item, r.n, r.mean, r.sd, _interval(r.ci_low, r.ci_high)]
                  for r in result.means.itertuples()]), "",
        "![mean scores](scores.png)" if len(result.means) else "(no scores yet: no plot)", "",
        "## Paired Wilcoxon signed-rank tests", "",
        "Scores of two arms paired by reader and case; difference = second - first; zero differences dropped "
        "(Wilcoxon's method); two-sided; Holm-adjusted over the arm pairs of each item.", "",
        md_table(["item", "first", "second", "pairs", "mean difference", "W", "p", "p (Holm)"],
                 [[r.item, r.arm_a, r.arm_b, r.n, r.mean_diff, r.statistic, r.p, r.p_holm]
                  for r in result.wilcoxon.itertuples()]), "",
        "## Inter-reader agreement", "",
        "Over the images (case x arm) that every reader scored: ICC(2,k) (two-way random effects, absolute "
        "agreement, mean of k readers; Shrout & Fleiss 1979) with its 95 % interval, ICC(2,1) (one reader), and "
        "the quadratic-weighted Cohen's kappa of each reader pair (mean over pairs).", "",
        md_table(["item", "readers", "images", "ICC(2,k)", "95% CI", "ICC(2,1)", "weighted kappa", "per pair"],
                 [[r.item, r.readers, r.images, r.icc2k, _interval(r.icc2k_low, r.icc2k_high), r.icc21,
                   r.kappa, "; ".join(f"{pair}: {value:.3g}" for pair, value in r.kappa_pairs.items()) or "n/a"]
                  for r in result.agreement.itertuples()]), "",
    ]
    if len(result.preference):
        parts += [
            "## A/B preference", "",
            "How often readers preferred each arm when two were shown side by side (sides randomised); p: "
            "two-sided binomial test of the decided choices against 50 %; left: share of decided choices that "
            "went to the image on the left (side bias).", "",
            md_table(["first", "second", "choices", "first preferred", "no preference", "second preferred",
                      "p", "left won"],
                     [[r.arm_a, r.arm_b, r.n, f"{r.wins_a} ({r.share_a:.0%})", r.equal, f"{r.wins_b} ({r.share_b:.0%})",
                       r.p, r.left_share] for r in result.preference.itertuples()]), "",
            "![A/B preference](preferences.png)", "",
        ]
    return "\n".join(parts)


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with text cells that a spreadsheet would run as a formula (a reader named
    ``=HYPERLINK(...)``) prefixed with an apostrophe (OWASP's CSV-injection advice)."""
    def cell(value: object) -> object:
        return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
    return table.apply(lambda column: column.map(cell) if not pd.api.types.is_numeric_dtype(column) else column)


def write_analysis(study: Study, store: Store, out: Path) -> Analysis:
    """Write the CSVs, plots and report.md into ``out``; the tables behind them."""
    result = run_analysis(study, store)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "answers.csv", spreadsheet_safe(result.likert).to_csv(index=False))
    _write_text(out / "preferences.csv", spreadsheet_safe(result.preferences).to_csv(index=False))
    items = [item["key"] for item in study.items]
    if len(result.means):
        _plot(out / "scores.png", scores_plot(result.means, [arm.label for arm in study.arms], items))
    if len(result.preference):
        _plot(out / "preferences.png", preference_plot(result.preference))
    _write_text(out / "report.md", report_markdown(study, store, result))
    return result
