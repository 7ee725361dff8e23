"""Compare INT8 models in one dose-curve record by issue 11's own measure, distance to oracle NLM:
``python -m benchmarks.dose_compare RECORD.json --reference SHIPPED --candidates LABEL [LABEL ...]``.

For each model (a method label of the record, e.g. ``fq2.int8.onnx``) it reports issue 11's
targets as :func:`benchmarks.dose_curve.target_check` judges them (INT8 minus oracle NLM per
cell: CT soft-tissue and lung windows, MR, X-ray; the mean CT soft-tissue margin), the worst CT
cell over both windows, and, against the reference, every *image*-cell where the reference is
within ``--near`` dB of oracle NLM and the candidate loses more than ``--tolerance`` dB: a
candidate may not buy its gains on the images that are already closest to losing. It reports; a
rule decides (docs/DECISIONS.md section 31: on a ``--split validation`` record, to choose among
recipes; a test record only reports). Each model must be the only file of its name in the run
(labels are file names), and with several INT8 students named the dose curve routes no MR model:
the MR cells are each model's own. Prints a table, and with ``--out`` writes the comparison as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import report
from benchmarks.dose_curve import QUALITY_TARGETS, target_check
from benchmarks.record import refuse_unwritable, write_json

# issue 11's targets against oracle NLM (descriptions as target_check names them): per cell, CT apart, and the CT mean
_AGAINST_NLM = [t for t in QUALITY_TARGETS if t.reference == "oracle"]
CT_EVERY_CELL = tuple(t.description for t in _AGAINST_NLM if t.modalities == ("CT",) and not t.on_mean)
CT_MEAN = next(t.description for t in _AGAINST_NLM if t.modalities == ("CT",) and t.on_mean)
OTHER_MODALITIES = tuple(t.description for t in _AGAINST_NLM if t.modalities != ("CT",))
WINDOWS = {t.description: t.metric for t in _AGAINST_NLM if t.description in CT_EVERY_CELL}


def model_margins(summary: list[dict], label: str) -> dict:
    """``label``'s margins over oracle NLM: ``cells`` ("MODALITY degradation metric" -> dB), the
    worst CT cell over both windows (``worst_ct_db``) and the mean CT soft-tissue margin."""
    targets = {t["description"]: t for t in target_check(summary, {"int8": label})}
    cells = {f"{c['modality']} {c['degradation']} {targets[name]['metric']}": c["margin_db"]
             for name in (*CT_EVERY_CELL, *OTHER_MODALITIES) for c in targets[name]["cells"]}
    ct = [c["margin_db"] for name in CT_EVERY_CELL for c in targets[name]["cells"]]
    if not ct:
        raise ValueError(f"{label}: no CT cell with oracle NLM beside it")
    return {"cells": cells, "worst_ct_db": min(ct), "mean_ct_soft_db": targets[CT_MEAN]["value_db"]}


def image_margins(per_image: list[dict], label: str) -> dict[str, float]:
    """``label``'s CT margins over oracle NLM per image-cell: "image degradation metric" -> dB."""
    by_image: dict[str, list[dict]] = {}
    for row in per_image:
        if row["modality"] == "CT":
            by_image.setdefault(row["image"], []).append({**row, **row["metrics"], "images": 1})
    margins = {}
    for image, rows in by_image.items():
        for target in target_check(rows, {"int8": label}):
            if target["description"] in WINDOWS:
                for cell in target["cells"]:
                    margins[f"{image} {cell['degradation']} {WINDOWS[target['description']]}"] = cell["margin_db"]
    return margins


def compare(record: dict, reference: str, candidates: list[str], near_db: float = 0.5,
            tolerance_db: float = 0.10) -> dict:
    """Each model's margins, and each candidate's changes against ``reference``: the worst CT cell's
    and the mean soft margin's gain, and the image-cells near oracle NLM that it loses (see module doc)."""
    if record.get("benchmark") != "dose_curve":
        raise ValueError("not a dose-curve record (python -m benchmarks.quality --dose-curve)")
    methods = {row["method"] for row in record["summary"]}
    missing = [label for label in (reference, *candidates) if label not in methods]
    if missing:
        raise ValueError(f"not in the record: {', '.join(missing)} (methods: {', '.join(sorted(methods))})")
    models = {label: model_margins(record["summary"], label) for label in (reference, *candidates)}
    near = {key: value for key, value in image_margins(record["per_image"], reference).items() if value < near_db}
    result = {"split": record.get("split", "test"), "reference": reference, "near_db": near_db,
              "tolerance_db": tolerance_db, "models": models, "candidates": {}}
    for label in candidates:
        theirs = image_margins(record["per_image"], label)
        unscored = sorted(set(near) - set(theirs))
        if unscored:
            raise ValueError(f"{label} has no score on {len(unscored)} image-cells the reference has, "
                             f"e.g. {unscored[0]}")
        losses = {key: {"reference_db": value, "candidate_db": theirs[key]} for key, value in near.items()
                  if theirs[key] - value < -tolerance_db}
        result["candidates"][label] = {
            "worst_ct_gain_db": models[label]["worst_ct_db"] - models[reference]["worst_ct_db"],
            "mean_ct_soft_gain_db": models[label]["mean_ct_soft_db"] - models[reference]["mean_ct_soft_db"],
            "near_cells": len(near), "near_cells_lost": losses}
    return result


def table(result: dict) -> str:
    """Per-cell margins (dB over oracle NLM), one column per model, then each candidate's summary."""
    labels = list(result["models"])
    cells = sorted({cell for model in result["models"].values() for cell in model["cells"]})
    rows = [[cell, *[result["models"][label]["cells"].get(cell) for label in labels]] for cell in cells]
    rows += [["worst CT cell", *[result["models"][label]["worst_ct_db"] for label in labels]],
             ["mean CT soft-tissue", *[result["models"][label]["mean_ct_soft_db"] for label in labels]]]
    lines = [f"{result['split']} split: INT8 - oracle NLM (dB)", report.table(["cell", *labels], rows), ""]
    for label, change in result["candidates"].items():
        lines.append(f"{label} vs {result['reference']}: worst CT cell {change['worst_ct_gain_db']:+.2f} dB, "
                     f"mean soft {change['mean_ct_soft_gain_db']:+.2f} dB, image-cells within "
                     f"{result['near_db']:g} dB of NLM that lose more than {result['tolerance_db']:g} dB: "
                     f"{len(change['near_cells_lost'])} of {change['near_cells']}")
        lines += [f"  {key}: {loss['reference_db']:+.2f} -> {loss['candidate_db']:+.2f}"
                  for key, loss in change["near_cells_lost"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dose_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="a dose-curve JSON (python -m benchmarks.quality --dose-curve)")
    parser.add_argument("--reference", required=True, help="the shipped INT8 model's method label in the record")
    parser.add_argument("--candidates", nargs="+", required=True, help="candidate INT8 models' method labels")
    parser.add_argument("--near", type=float, default=0.5, help="image-cells where the reference is less than this "
                        "many dB above oracle NLM are guarded")
    parser.add_argument("--tolerance", type=float, default=0.10, help="dB a candidate may lose on a guarded image-cell")
    parser.add_argument("--out", type=Path, help="also write the comparison as JSON")
    args = parser.parse_args(argv)
    refuse_unwritable(parser, args.out)
    try:
        record = json.loads(args.record.read_text())
        result = compare(record, args.reference, args.candidates, args.near, args.tolerance)
    except (OSError, ValueError, KeyError) as error:
        print(f"dose_compare: error: {args.record}: {error}", file=sys.stderr)
        return 2
    print(table(result))
    if args.out:
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
