"""The study's answers as tables, and their statistics (scipy, pingouin, scikit-learn).

- mean score per arm and item, with a t confidence interval (``scipy.stats.t``);
- paired Wilcoxon signed-rank tests between arms (``scipy.stats.wilcoxon``), pairs matched on
  reader and case, Holm-adjusted within each item (``pingouin.multicomp``);
- inter-reader agreement per item over the case x arm images: ICC(2,k) and ICC(2,1)
  (``pingouin.intraclass_corr``, two-way random effects, absolute agreement) and the
  quadratic-weighted Cohen's kappa of each reader pair (``sklearn.metrics.cohen_kappa_score``);
- A/B preferences per arm pair, with a two-sided binomial test of the decided choices
  (``scipy.stats.binomtest``) and the share of decided choices that went to the left image.
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.reader_study.items import SCALE
from benchmarks.reader_study.manifest import Study
from benchmarks.reader_study.store import EQUAL, Store

LIKERT_COLUMNS = ["reader", "case", "arm", "item", "score", "time", "answered_at"]
PREFERENCE_COLUMNS = ["reader", "case", "arm_a", "arm_b", "left", "preferred", "time", "answered_at"]
CONFIDENCE = 0.95
ICC_TYPES = {"icc2k": ("ICC2k", "ICC(A,k)"), "icc21": ("ICC2", "ICC(A,1)")}  # pingouin's names, old and new


def likert_frame(study: Study, store: Store) -> pd.DataFrame:
    """Every Likert score, arms by label: reader, case, arm, item, score, time (s), answered_at;
    arms and items in the study's order (the report's tables follow it)."""
    arms = [arm.id for arm in study.arms]
    items = [item["key"] for item in study.items]
    rows = store.all_likert()  # in reader sign-up order
    readers = list(dict.fromkeys(row[0] for row in rows))
    rows.sort(key=lambda r: (readers.index(r[0]), r[1], arms.index(r[2]), items.index(r[3])))
    return pd.DataFrame([(reader, case, study.arm(arm).label, item, score, seconds, at)
                         for reader, case, arm, item, score, seconds, at in rows], columns=LIKERT_COLUMNS)


def preference_frame(study: Study, store: Store) -> pd.DataFrame:
    """Every A/B choice, arms by label; ``preferred`` is an arm label or "equal"."""
    def label(arm: str) -> str:
        return EQUAL if arm == EQUAL else study.arm(arm).label
    rows = [(reader, case, label(a), label(b), label(left), label(choice), seconds, at)
            for reader, case, a, b, left, choice, seconds, at in store.all_preferences()]
    return pd.DataFrame(rows, columns=PREFERENCE_COLUMNS)


def mean_scores(likert: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean, SD and the t interval of the mean per arm and item (ratings taken as independent)."""
    rows = []
    for (arm, item), scores in likert.groupby(["arm", "item"], sort=False)["score"]:
        values = scores.to_numpy(dtype=float)
        mean, n = float(values.mean()), len(values)
        if n > 1 and values.std(ddof=1) > 0:
            low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(values))
        else:
            low = high = mean if n > 1 else float("nan")
        rows.append({"arm": arm, "item": item, "n": n, "mean": mean,
                     "sd": float(values.std(ddof=1)) if n > 1 else float("nan"),
                     "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows, columns=["arm", "item", "n", "mean", "sd", "ci_low", "ci_high"])


def wilcoxon_tests(likert: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Per item and arm pair: paired scores (same reader and case), mean difference B - A,
    Wilcoxon statistic (the smaller signed-rank sum; zero differences dropped), p and Holm p."""
    from pingouin import multicomp

    rows = []
    for item, scores in likert.groupby("item", sort=False):
        wide = scores.pivot_table(index=["reader", "case"], columns="arm", values="score")
        family = []
        for a, b in combinations(arms, 2):
            pairs = wide[[a, b]].dropna() if {a, b} <= set(wide.columns) else pd.DataFrame(columns=[a, b])
            diff = pairs[b].to_numpy(float) - pairs[a].to_numpy(float)
            row = {"item": item, "arm_a": a, "arm_b": b, "n": len(diff),
                   "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
                   "statistic": float("nan"), "p": float("nan")}
            if np.count_nonzero(diff):
                result = stats.wilcoxon(pairs[b].to_numpy(float), pairs[a].to_numpy(float), zero_method="wilcox")
                row.update(statistic=float(result.statistic), p=float(result.pvalue))
            family.append(row)
        tested = [row for row in family if np.isfinite(row["p"])]
        adjusted = multicomp([row["p"] for row in tested], method="holm")[1] if tested else []
        for row, p_holm in zip(tested, adjusted):
            row["p_holm"] = float(p_holm)
        rows += family
    columns = ["item", "arm_a", "arm_b", "n", "mean_diff", "statistic", "p", "p_holm"]
    return pd.DataFrame(rows, columns=columns)


def icc_row(table: pd.DataFrame, key: str) -> pd.Series:
    """The pingouin ICC row of ``key`` (``icc2k``, ``icc21``), whichever naming the version uses."""
    return table[table["Type"].isin(ICC_TYPES[key])].iloc[0]


def agreement(likert: pd.DataFrame) -> pd.DataFrame:
    """Per item: ICC(2,k) with its 95 % interval, ICC(2,1), and the quadratic-weighted Cohen's
    kappa of every reader pair (and their mean), over the images (case x arm) all readers scored."""
    from pingouin import intraclass_corr
    from sklearn.metrics import cohen_kappa_score

    rows = []
    for item, scores in likert.groupby("item", sort=False):
        frame = scores.assign(target=scores["case"] + "/" + scores["arm"])
        wide = frame.pivot_table(index="target", columns="reader", values="score").dropna()
        row = {"item": item, "readers": wide.shape[1], "images": wide.shape[0], "icc2k": float("nan"),
               "icc2k_low": float("nan"), "icc2k_high": float("nan"), "icc21": float("nan"),
               "kappa": float("nan"), "kappa_pairs": {}}
        if wide.shape[1] >= 2 and wide.shape[0] >= 2:
            long = wide.reset_index().melt(id_vars="target", var_name="reader", value_name="score")
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pingouin's use of deprecated pandas keywords
                table = intraclass_corr(long, targets="target", raters="reader", ratings="score")
            two_k = icc_row(table, "icc2k")
            row.update(icc2k=float(two_k["ICC"]), icc2k_low=float(two_k["CI95"][0]),
                       icc2k_high=float(two_k["CI95"][1]), icc21=float(icc_row(table, "icc21")["ICC"]))
            scores_seen = wide.to_numpy(dtype=int)
            labels = list(range(min(SCALE[0], scores_seen.min()), max(SCALE[-1], scores_seen.max()) + 1))
            pairs = {f"{r1} / {r2}": float(cohen_kappa_score(wide[r1].astype(int), wide[r2].astype(int),
                                                               labels=labels, weights="quadratic"))
                     for r1, r2 in combinations(wide.columns, 2)}
            row.update(kappa=float(np.mean(list(pairs.values()))), kappa_pairs=pairs)
        rows.append(row)
    return pd.DataFrame(rows, columns=["item", "readers", "images", "icc2k", "icc2k_low", "icc2k_high", "icc21",
                                       "kappa", "kappa_pairs"])


def preference_summary(preferences: pd.DataFrame) -> pd.DataFrame:
    """Per arm pair: choices, wins of each arm, no-preference answers, the share of all choices
    each arm won, the binomial p of the decided choices and how often the left image won."""
    rows = []
    for (a, b), choices in preferences.groupby(["arm_a", "arm_b"], sort=False):
        n = len(choices)
        wins_a, wins_b = int((choices["preferred"] == a).sum()), int((choices["preferred"] == b).sum())
        decided = wins_a + wins_b
        left_wins = int((choices["preferred"] == choices["left"]).sum())
        rows.append({"arm_a": a, "arm_b": b, "n": n, "wins_a": wins_a, "wins_b": wins_b, "equal": n - decided,
                     "share_a": wins_a / n, "share_b": wins_b / n,
                     "p": float(stats.binomtest(wins_a, decided, 0.5).pvalue) if decided else float("nan"),
                     "left_share": left_wins / decided if decided else float("nan")})
    return pd.DataFrame(rows, columns=["arm_a", "arm_b", "n", "wins_a", "wins_b", "equal", "share_a", "share_b",
                                       "p", "left_share"])
