"""Write models/MODEL_CARD.md and models/model_card.json from the files a reproduction made.

Every number comes from a file: the checkpoints (config, data summary, held-out metrics), the
quality record of ``python -m benchmarks.quality`` and the latency record of
``python -m benchmarks.latency``. Nothing is typed in by hand.

    python scripts/make_model_card.py --run runs/default --quality models/quality.json \
        --latency models/latency.json

``--sr2`` writes the x2 super-resolution model's section instead (between the card's
``<!-- sr2-card:begin/end -->`` markers, kept when the denoiser's card is rewritten) and
models/sr2_card.json, from scripts/reproduce_sr2_model.sh's run and records:

    python scripts/make_model_card.py --sr2 --run runs/sr2 --quality models/sr2_quality.json \
        --latency models/sr2_latency.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from benchmarks import dose_report
from benchmarks.markdown import latency_markdown, md_table, read_marked_section, write_marked_section
from runtime.engine_sidecar import sha256_file
from trainer.checkpoint import load_checkpoint
from trainer.models import count_flops, count_parameters, create_model

MODELS = Path("models")
FILES = ["medclear_student.fp32.onnx", "medclear_student.int8.onnx", "medclear_student.qat.pt", "medclear_teacher.pt",
         "medclear_student_mr.fp32.onnx", "medclear_student_mr.int8.onnx", "medclear_student_mr.qat.pt"]
REPRODUCE = "bash scripts/reproduce_default_model.sh"
SR2_FILES = ["medclear_sr2.fp32.onnx", "medclear_sr2.int8.onnx", "medclear_sr2.qat.pt", "medclear_sr2_teacher.pt",
             "medclear_sr2_gan.pt", "medclear_sr2_mr.fp32.onnx", "medclear_sr2_mr.int8.onnx", "medclear_sr2_mr.qat.pt"]
SR2_REPRODUCE = "bash scripts/reproduce_sr2_model.sh"
SR2_SECTION = "sr2-card"


# Stages whose last step, not best.pt, went on (reproduce_default_model.sh): the MR float stage's
# best.pt is chosen on a validation mean that the template slices swing; the float stage with real head CT
# slices (the QAT started from its last step, as the twenty-sixth session's rule said), and the
# self-ensemble float stages after it (each started from the one before's last step).
# The float stages with training CT head phantoms, in order (each continued the one before); a new one is added here.
HEAD_STAGES = ("heads", "heads2", "heads3", "heads4", "heads5", "heads6", "heads7", "heads8", "heads9",
               "heads10", "heads11", "heads12")
LAST_STEP_STAGES = {"mr", "invesalius", "ensemble", "ensemble2", *HEAD_STAGES}


def _checkpoint(run: Path, stage: str) -> Path:
    """The checkpoint of ``stage`` that the next stage started from."""
    return run / stage / ("last.pt" if stage in LAST_STEP_STAGES else "best.pt")


def _stage(run: Path, stage: str) -> dict:
    info = load_checkpoint(_checkpoint(run, stage))
    model = create_model(info["model_name"], **info["model_kwargs"])
    return {
        "model": info["model_name"],
        "kwargs": info["model_kwargs"],
        "parameters": count_parameters(model),
        "gflop_512": round(count_flops(model) / 1e9, 2),
        "step": info.get("step"),
        "metrics": info.get("metrics"),
        "config": info.get("config"),
        "data_summary": info.get("data_summary"),
    }


OPEN_ENDED_STEPS = 100000  # a budgeted run's step count that only the clock could reach


def _length(config: dict | None) -> str:
    """A stage's planned length: its steps, its time budget (the schedule followed the clock), or
    both when either could end it."""
    train = (config or {}).get("train", {})
    steps, minutes = train.get("steps", "?"), train.get("max_minutes")
    if not minutes:
        return str(steps)
    return f"{minutes:g} min" if not isinstance(steps, int) or steps >= OPEN_ENDED_STEPS else f"{steps} or {minutes:g} min"


def _pareto_rows(pareto: dict | None) -> list[list]:
    """One row per distilled student size: cost and the validation PSNR that chose among them."""
    if not pareto:
        return []
    return [[(f"**{Path(s['run']).name}**" if s["run"] == pareto["chosen"] else Path(s["run"]).name), json.dumps(s["model"]["kwargs"]["widths"]),
             f"{s['params_m']:.3f}", f"{s['gflop_512']:.1f}", f"{s['validation_psnr']:.2f}"] for s in pareto["students"]]


def _files(names: list[str]) -> dict:
    return {name: {"sha256": sha256_file(MODELS / name), "bytes": (MODELS / name).stat().st_size}
            for name in names if (MODELS / name).is_file()}


def _stages(run: Path, names: tuple[str, ...], carried: dict[str, dict] | None = None) -> dict[str, dict]:
    """Each named stage of ``run`` that has a best.pt, else one ``carried`` from an earlier card
    (optional stages may be absent)."""
    carried = carried or {}
    found = {}
    for stage in names:
        if _checkpoint(run, stage).is_file():
            found[stage] = _stage(run, stage)
        elif stage in carried:
            found[stage] = carried[stage]
    return found


def carried_stages(card_json: Path, mapping: list[str], checkpoint: str = "medclear_student.qat.pt",
                   current_sha256: str | None = None) -> dict[str, dict]:
    """Stages as an earlier card's JSON recorded them, for stages whose run folders are gone:
    ``mapping`` entries ``STAGE`` or ``STAGE=EARLIER_STAGE`` (the earlier card's name for it).
    Each comes back as :func:`_stage` read it then, marked ``carried_from`` (that card and the
    ``checkpoint`` it described). ``current_sha256``: the shipped ``checkpoint``'s digest now; a
    renaming entry is refused when the card already describes that file (it was regenerated for
    the new model, so its EARLIER_STAGE is the new model's stage, not the earlier one)."""
    card = json.loads(card_json.read_text())
    # Which model that card described: later cards reuse stage names (e.g. "qat") for new models.
    full_digest = card.get("files", {}).get(checkpoint, {}).get("sha256", "")
    digest = full_digest[:12]
    source = f"{card_json.name} ({checkpoint} sha256 {digest})" if digest else card_json.name
    result = {}
    for entry in mapping:
        stage, _, earlier = entry.partition("=")
        earlier = earlier or stage
        if earlier not in card.get("stages", {}):
            raise SystemExit(f"error: {card_json}: no stage {earlier!r} to carry (has: {', '.join(card.get('stages', {}))})")
        if earlier != stage and current_sha256 and full_digest == current_sha256:
            raise SystemExit(f"error: {card_json} already describes the current {checkpoint} (sha256 {digest}): its "
                             f"{earlier!r} is that model's, not an earlier one's; carry {entry} from the card before it "
                             f"(e.g. git show REV:models/{card_json.name} > models/{card_json.name})")
        result[stage] = {**card["stages"][earlier], "config": card.get("configs", {}).get(earlier),
                         "carried_from": f"{source}: {earlier}"}
    return result


def _current_sha256(name: str) -> str | None:
    """The digest of the shipped file ``models/NAME`` now (None if it is absent)."""
    return sha256_file(MODELS / name) if (MODELS / name).is_file() else None


def _test_counts(quality: dict) -> str:
    """E.g. ``4 CT, 1 CR and 1 MR images``: the dose curve's test images by modality."""
    counts = Counter(modality for modality, _ in {(r["modality"], r["image"]) for r in quality.get("per_image", [])})
    parts = [f"{n} {m}" for m, n in sorted(counts.items())]
    return (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)) + " images"


def _files_table(files: dict) -> str:
    return md_table(["file", "bytes", "sha256"], [[k, v["bytes"], v["sha256"][:16] + "…"] for k, v in files.items()])


def _command_lines(script: str) -> list[str]:
    """The lines of a shell script that run the project's commands (the card's command list): each with
    its continuation lines, and the ``for`` / ``done`` lines of the loops that repeat them."""
    prefixes = ('"$PY"', "--", "cp ", "continue_then_qat ", "continue_from ", "self_ensemble ", "distill_toward ",
                'PYTHON="$PY"', "for ", "done")
    kept, continued = [], False
    for line in Path(script).read_text().splitlines():
        if continued or line.strip().startswith(prefixes):
            kept.append(line)
            continued = line.rstrip().endswith("\\")
    return kept


def _carried_note(stages: dict, card_name: str) -> list[str]:
    """The lines saying which stages (marked *) were carried from the previous card, if any."""
    if not any("carried_from" in v for v in stages.values()):
        return []
    return [f"Stages marked * are carried from the previous card (`{card_name}`: their numbers as the run",
            "folders then held them; those folders are not on the machine that wrote this card).", ""]


def _card_json(name: str, stages: dict, files: dict, quality: dict, reproduce: str, **extra) -> dict:
    """The card's JSON twin: stages (configs apart), files, the quality record's summary."""
    return {"name": name, "stages": {k: {x: v[x] for x in v if x != "config"} for k, v in stages.items()},
            "configs": {k: v["config"] for k, v in stages.items()}, "files": files,
            "quality": quality["summary"], "quality_targets": quality.get("targets"),
            "quality_machine": quality.get("machine"), **extra, "reproduce": reproduce}


def _released_modalities(name: str = SR2_FILES[0]) -> list[str]:
    """The modalities the shipped x2 ONNX file ``name``'s contract covers."""
    import onnx

    from compiler.onnx_io import read_contract

    path = MODELS / name
    return list(read_contract(onnx.load(str(path))).modalities) if path.is_file() else ["?"]


def _sr2_target_summary(quality: dict) -> str:
    """One sentence: how many of issue 15's targets the record's test split meets, and the
    packaged CT scans' INT8 margins over bicubic and Lanczos."""
    targets = [t for t in quality.get("targets") or [] if t["pass"] is not None]  # None: modality not released
    met = sum(bool(t["pass"]) for t in targets)
    scans = {t["target"]: t["measured_db"] for t in targets if t["modality"] == "CT scans"}
    sentence = f"Issue 15's targets: {met} of the {len(targets)} scored met on the test split."
    if {"int8_over_bicubic_db", "int8_over_lanczos_db"} <= scans.keys():
        sentence += (f" On the packaged CT scans (the `CT scans` rows) INT8 is {scans['int8_over_bicubic_db']:+.2f} dB"
                     f" over bicubic and {scans['int8_over_lanczos_db']:+.2f} dB over Lanczos.")
    return sentence


SR2_BASES = {"nearest": "a nearest x2 upsampling",
             "lanczos3": "a fixed Lanczos-3 x2 upsampling (a nearest-base student's weights moved onto it and trained on)",
             "lanczos8": "a fixed Lanczos-8 x2 upsampling (a wider windowed sinc, as two 1-D passes; another base's weights "
                         "moved onto it)"}


def _sr2_quantization(stage: dict) -> str:
    """How the shipped x2 stage became INT8: trained quantization-aware, or calibrated only (LR 0)."""
    if ((stage.get("config") or {}).get("train") or {}).get("lr") == 0:
        return "quantized to INT8 by calibration alone (ModelOpt; the weights stay the float student's)"
    return "trained quantization-aware (INT8)"


SR2_STAGES = ("teacher", "student", "student_gan", "finetune", "finetune_ct", "kd_real", "real_only", "qat_nearest",
              "lanczos", "lanczos2", "lanczos3", "lanczos4", "qat", "mr", "qat_mr")


def _sr2_mr_paragraph(stages: dict) -> list[str]:
    """The MR x2 model's lines (stages ``mr`` and ``qat_mr``), none when it was not made."""
    if not {"mr", "qat_mr"} <= stages.keys():
        return []
    teacher, student = stages["teacher"], stages["qat_mr"]
    return [
        f"**MR: `medclear_sr2_mr`**, released for {', '.join(_released_modalities('medclear_sr2_mr.fp32.onnx'))}: the",
        f"same student architecture on {SR2_BASES[student['kwargs'].get('base', 'nearest')]}, the `lanczos4` weights",
        "distilled on MR alone (the training split's real MR frames and band-limited MR phantoms, pairs by DCT",
        "k-space truncation) toward zero-filled DCT interpolation, the exact inverse of that truncation for a",
        "band-limited image, which no engine runs (stage `mr`), then "
        f"{_sr2_quantization(student)} (stage `qat_mr`); {teacher['gflop_512'] / student['gflop_512']:.1f}×",
        "fewer FLOPs than the x2 teacher. Its MR rows below are scored with MR halved by DCT truncation.",
        "",
    ]


def build_sr2_section(run: Path, quality: dict, latency: dict | None,
                      carried: dict[str, dict] | None = None) -> tuple[str, dict]:
    """The x2 super-resolution model's card section and its JSON twin (``carried``: stages read
    from the earlier models/sr2_card.json)."""
    from benchmarks.super_resolution import markdown as sr2_markdown

    stages = _stages(run, SR2_STAGES, carried)
    files = _files(SR2_FILES)
    card_json = _card_json("medclear_sr2", stages, files, quality, SR2_REPRODUCE,
                           latency=(latency or {}).get("latency"))
    teacher, student = stages["teacher"], stages["qat"]
    lines = [
        "## medclear_sr2: x2 super-resolution",
        "",
        "A x2 super-resolution student (distilled on CT, MR and X-ray, then distilled again on real CT slices",
        f"and radiographs alone, and quantized there): {SR2_BASES[student['kwargs'].get('base', 'nearest')]} plus a",
        "learned residual brought to the output grid by one PixelShuffle (ONNX DepthToSpace), distilled",
        f"from an EDSR-style teacher and {_sr2_quantization(student)}. Low-resolution training pairs:",
        "MR by k-space truncation to half the matrix, CT/X-ray by blur and 2x2 area averaging",
        f"(docs/DATA.md). Made by `{SR2_REPRODUCE}`; every number is read from that run's files"
        + (" or, for stages marked *, from the card that read them." if any("carried_from" in v for v in stages.values()) else "."),
        f"**`medclear_sr2` is released for {', '.join(_released_modalities())} only** (the ONNX files' contract; the",
        "runtime refuses other modalities): the quality below was measured on the same weights exported for every",
        f"trained modality. {_sr2_target_summary(quality)}",
        "",
        _files_table(files),
        "",
        md_table(
            ["stage", "model", "kwargs", "parameters", "GFLOP per 512² input", "best.pt at step"],
            [[k + (" *" if "carried_from" in v else ""), v["model"], json.dumps(v["kwargs"]), v["parameters"],
              v["gflop_512"], v["step"]] for k, v in stages.items()],
        ),
        "",
        *_carried_note(stages, "sr2_card.json"),
        f"The student has {teacher['gflop_512'] / student['gflop_512']:.1f}× fewer FLOPs than its teacher. "
        "`student_gan` is the adversarial variant (L1 0.5 / SSIM 0.3 / relativistic GAN 0.2), reported",
        "for its texture, not shipped as ONNX.",
        "",
        *_sr2_mr_paragraph(stages),
        "### Quality on the test split",
        sr2_markdown(quality),
        "",
    ]
    if latency:
        lines += ["### Latency (512² input → 1024² output, beside the denoiser)", latency_markdown(latency), ""]
    lines += ["### Limits",
              "- Trained and tested on simulated low-resolution images of the packaged scans and phantoms; a real",
              "  low-resolution acquisition differs in noise and in the scanner's own filters.",
              "- Noiseless training inputs: denoise first, then upscale (docs/RUNTIME.md).", ""]
    return "\n".join(lines), card_json


# The default model's stages in order; all but teacher, student and qat are optional (earlier
# recipes had none). qat_v1 is the QAT stage whose float weights the textured continuation started
# from, qat_v2 (the textured QAT) the one the RMSE-loss continuation (rmse) started from, qat_v3
# (its QAT with clipped radiographs) the one the second continuation (rmse2) started from, qat_v4 (rmse2's
# QAT) the one the third (rmse3) started from, qat_v5 (rmse3's QAT) the one the first runtime-normalization
# continuation (rnorm) started from; rnorm2 continued rnorm, jitter (told a jittered noise level) continued rnorm2;
# widen widened jitter's student and widen2 ... widen10 continued it; deep added a full-resolution layer to widen10's
# and deep2, deep3 continued it; deep4 added a second such layer to deep3's, deep5 and deep6 continued it, and
# ctex continued deep6 with textured training CT phantoms; invesalius continued ctex with real head CT slices;
# ensemble continued invesalius toward its own 4-flip ensemble (self-ensemble distillation), ensemble2 continued ensemble
# the same way; heads continued ensemble2 the same way with training CT head phantoms, and heads2 continued heads
# with the same recipe and teacher (ensemble2's ensemble), heads3 continued heads2 the same way, and heads4 continued
# heads3 the same way with the head phantoms' brain grain, heads5 continued heads4 with 24 such heads, heads6,
# heads7 ... heads10 each continued the one before the same way, heads11 continued heads10 with training doses
# up to full dose, and heads12 continued heads11 with phantoms' doses up to twice full dose: heads12 is the shipped
# QAT's start.
DEFAULT_STAGES = ("teacher", "teacher_cpu", "student", "finetune", "finetune2", "noise_map", "noise_map_gpu", "qat_v1",
                  "textured", "qat_v2", "rmse", "qat_v3", "rmse2", "qat_v4", "rmse3", "qat_v5", "rnorm", "rnorm2",
                  "jitter", "widen", "widen2", "widen3", "widen4", "widen5", "widen6", "widen7", "widen8",
                  "widen9", "widen10", "deep", "deep2", "deep3", "deep4", "deep5", "deep6", "ctex", "invesalius",
                  "ensemble", "ensemble2", *HEAD_STAGES, "qat", "mr", "qat_mr")


MR_STAGES = ("mr", "qat_mr")  # the MR denoiser's stages (docs/DECISIONS.md section 28): float, then QAT


def _mr_paragraph(stages: dict) -> list[str]:
    """The MR denoiser's lines (``MR_STAGES``), none when it was not made."""
    if not set(MR_STAGES) <= stages.keys():
        return []
    mr, student = (stages[name] for name in MR_STAGES)
    return [
        "**MR: `medclear_student_mr`**, which a run that names no model gives every MR file (`runtime/routing.py`):",
        f"the same architecture ({student['parameters']:,} parameters, {student['gflop_512']} GFLOP per 512² slice),",
        f"`ctex`'s weights trained {_length(mr['config'])} steps on MR alone (phantoms, the MNI152 T1 template and",
        "photographs as MR-like images: fine texture that is not noise; docs/DATA.md) (stage `mr`, its last step",
        f"taken on), then trained quantization-aware on MR ({_length(student['config'])} steps, stage `qat_mr`).",
        "CT and X-ray files keep `medclear_student`. The dose curve's MR rows below are this model's",
        "(docs/DECISIONS.md, section 28).",
        "",
    ]


def _widened_note(pareto: dict | None, student: dict) -> list[str]:
    """A line saying so when the shipped student is wider than the size the Pareto run chose."""
    chosen = next((s for s in (pareto or {}).get("students", []) if s["run"] == pareto.get("chosen")), None)
    widths = student["kwargs"].get("widths")
    if chosen is None or widths == chosen["model"]["kwargs"]["widths"]:
        return []
    extra = student["kwargs"].get("extra_blocks")
    deepened = (f" and given {json.dumps(extra)} more conv layers per level (`extra_blocks`, each starting as the identity)"
                if extra and any(extra) else "")
    return [f"The shipped student began as the chosen size and was later widened to {json.dumps(widths)}{deepened} "
            f"({student['parameters'] / 1e6:.3f}M parameters, {student['gflop_512']} GFLOP per 512²), each time as the same",
            "function, and trained on (`trainer/models/widen.py`, `trainer/models/student.py`; the stages after the chosen "
            "size's, docs/TRAINING.md).", ""]


def _training_ranges(data: dict) -> str:
    """The noise ranges a stage's training patches were drawn from, read from its data summary, e.g. "CT 3-100 %
    dose through 4 reconstruction kernels, MR Rician 0.7-10 %, X-ray quantum noise at 150-6000 quanta"."""
    degradation = data.get("degradation") or {}
    ct, mr, xray = (degradation.get(key) or {} for key in ("ct", "mr", "xray"))
    parts = []
    if ct.get("train_dose_range"):
        low, high = ct["train_dose_range"]
        kernels = len(ct.get("kernels", []))
        above_full = " (above 100 % on phantoms only)" if high > 1 else ""  # trainer/data/datasets.py caps scans
        parts.append(f"CT {low * 100:g}-{high * 100:g} % dose{above_full} through {kernels} reconstruction kernels")
    if mr.get("train_sigma_range"):
        low, high = mr["train_sigma_range"]
        parts.append(f"MR {str(mr.get('noise', '')).capitalize()} {low * 100:g}-{high * 100:g} %")
    if xray.get("train_photon_range"):
        low, high = xray["train_photon_range"]
        parts.append(f"X-ray {xray.get('noise', '')} noise at {low:g}-{high:g} quanta")
    return ", ".join(parts) or "the ranges in docs/DATA.md"


def _earlier_sources(stages: dict[str, dict], data: dict) -> str:
    """", and in earlier stages also: ..." for the data sources a stage before the QAT trained on and
    the QAT did not (e.g. the float stage with real head CT slices), else "". The MR denoiser's own
    stages (``MR_STAGES``) are not this model's."""
    own = set(map(str, data.get("sources", [])))
    earlier = {str(source) for name, stage in stages.items() if name != "qat" and name not in MR_STAGES
               for source in (stage.get("data_summary") or {}).get("sources", [])} - own
    return f" (the QAT's), and in earlier stages also {', '.join(sorted(earlier))}" if earlier else ""


def build_card(run: Path, quality: dict, latency: dict | None, pareto: dict | None = None,
               carried: dict[str, dict] | None = None) -> tuple[str, dict]:
    """The Markdown card and its JSON twin (``carried``: stages read from an earlier card)."""
    stages = _stages(run, DEFAULT_STAGES, carried)
    files = _files(FILES)
    data = stages["qat"]["data_summary"] or {}
    card_json = _card_json("medclear_student", stages, files, quality, REPRODUCE, pareto=pareto,
                           latency_targets=(latency or {}).get("targets"))
    teacher, student = stages["teacher"], stages["qat"]
    lines = [
        "# medclear_student — model card",
        "",
        "A small residual denoiser for CT, MR and X-ray (CR/DX), "
        + ("told each image's measured noise level (a second input channel, model contract `noise_map`)"
           if student["kwargs"].get("noise_map") else "blind")
        + " over the whole noise range users",
        f"scan at ({_training_ranges(data)} in its QAT's training data),",
        "distilled from a U-Net++ teacher and trained quantization-aware (INT8,",
        f"NVIDIA ModelOpt). Made with the project's own commands by `{REPRODUCE}`; every number below is",
        "read from the files that run wrote (`scripts/make_model_card.py`).",
        "",
        "## Files",
        _files_table(files),
        "",
        "## Models",
        md_table(
            ["stage", "model", "kwargs", "parameters", "GFLOP per 512² slice", "checkpoint at step (of)"],
            [[k + (" *" if "carried_from" in v else ""), v["model"], json.dumps(v["kwargs"]), v["parameters"],
              v["gflop_512"], f"{v['step']} ({_length(v['config'])})"] for k, v in stages.items()],
        ),
        "",
        *_carried_note(stages, "model_card.json"),
        f"The teacher is U-Net++ one level shallower than the paper's ({json.dumps(teacher['kwargs'])}); the paper's",
        "widths (32..512) give 9.2M parameters and 276 GFLOP per 512² slice. The student has",
        f"{student['parameters']:,} parameters and {student['gflop_512']} GFLOP per 512² slice: "
        f"{teacher['gflop_512'] / student['gflop_512']:.1f}× fewer FLOPs than this teacher,",
        f"{275.58 / student['gflop_512']:.0f}× fewer than the paper-width teacher.",
        "",
        "## Data",
        f"- Sources: {', '.join(map(str, data.get('sources', [])))}{_earlier_sources(stages, data)}; "
        f"modalities {', '.join(map(str, data.get('modalities', [])))};",
        "  degradations: projection-domain low-dose CT, Rician MR and Poisson-Gaussian X-ray noise (docs/DATA.md).",
        f"- Validation split (the QAT stage's; earlier stages chose on the splits in their configs): "
        f"{', '.join(map(str, (data.get('validation') or {}).get('names', [])))}.",
        f"- Test split (only reported; the dose curve's, its references screened, docs/DATA.md): "
        f"{', '.join(name.split('/')[-1] for name in quality.get('test_images', []))}.",
        "- Full data summary: `model_card.json` → `stages.qat.data_summary`.",
        "",
        "## Student size: quality against cost (validation split)",
        "Distilled with the same recipe from the CPU teacher (`teacher_cpu` above; the GPU-trained `teacher` is the",
        "reference, docs/TRAINING.md); the chosen one (bold) has the",
        f"{(pareto or {}).get('rule', '?')}.",
        "",
        md_table(["run", "widths", "parameters (M)", "GFLOP per 512²", "validation PSNR (dB)"], _pareto_rows(pareto)),
        "",
        *_widened_note(pareto, student),
        *_mr_paragraph(stages),
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
        *_command_lines("scripts/reproduce_default_model.sh"),
        "# scripts/ship_default_model.sh, which the above calls with the QAT checkpoints as $QAT and $MR_QAT:",
        *_command_lines("scripts/ship_default_model.sh"),
        "```",
        "",
        "## Limits",
        "- Trained on a handful of real CT/MR/CR images (those shipped in pydicom and pydicom-data) plus",
        "  synthetic phantoms, on a 2-core CPU: a demonstration model, not a clinically validated one.",
        "- Low dose and X-ray exposure are simulated (docs/DATA.md); real-CT references are full-dose scans",
        "  with their own noise; no real low/full-dose pairs were available here.",
        f"- The test split is {_test_counts(quality)} at several levels each. X-ray validation images are",
        f"  {(data.get('validation') or {}).get('by_modality', {}).get('DX', 0)} synthetic radiographs (ellipsoid DRRs, "
        "docs/DATA.md) drawn by the same generator as the",
        "  synthetic training radiographs, so X-ray validation scores are in-distribution; the float stages before",
        "  `noise_map_gpu` were chosen without X-ray. The real test radiograph (the table above) is the check.",
        "- Earlier recipe choices (CT normalization range, full resolution, feature KD) were made on the then",
        "  held-out set, which is today's test split.",
        "",
    ]
    return "\n".join(lines), card_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="folder with teacher/, student/, [finetune/, finetune2/,] qat/")
    parser.add_argument("--quality", type=Path, required=True, help="benchmarks.quality JSON")
    parser.add_argument("--latency", type=Path, help="benchmarks.latency JSON")
    parser.add_argument("--pareto", type=Path, default=MODELS / "pareto.json", help="scripts/pareto_students.py JSON")
    parser.add_argument("--carry", nargs="+", default=[], metavar="STAGE[=EARLIER]",
                        help="stages missing from --run taken from the current models/model_card.json (with --sr2: "
                        "models/sr2_card.json) as it recorded them (EARLIER: its name there; refused once that card describes "
                        "the current checkpoint: restore the earlier card first), e.g. --carry teacher noise_map_gpu qat_v1")
    parser.add_argument("--sr2", action="store_true", help="write the x2 super-resolution section (--run: its run, "
                        "e.g. runs/sr2; --quality: benchmarks.super_resolution JSON)")
    args = parser.parse_args()
    quality = json.loads(args.quality.read_text())
    if quality.get("split", "test") != "test":
        raise SystemExit(f"error: {args.quality} is a record of the {quality['split']} split; the card reports the test "
                         "split's (benchmarks.quality --dose-curve without --split)")
    latency = json.loads(args.latency.read_text()) if args.latency and args.latency.is_file() else None
    card_path = MODELS / "MODEL_CARD.md"
    if args.sr2:
        carried = (carried_stages(MODELS / "sr2_card.json", args.carry, "medclear_sr2.qat.pt",
                                  _current_sha256("medclear_sr2.qat.pt")) if args.carry else None)
        markdown, card = build_sr2_section(args.run, quality, latency, carried)
        write_marked_section(card_path, markdown, SR2_SECTION)
        (MODELS / "sr2_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        print(f"wrote the x2 section of {card_path} and {MODELS / 'sr2_card.json'}")
        return
    pareto = json.loads(args.pareto.read_text()) if args.pareto.is_file() else None
    carried = (carried_stages(MODELS / "model_card.json", args.carry, current_sha256=_current_sha256("medclear_student.qat.pt"))
               if args.carry else None)
    markdown, card = build_card(args.run, quality, latency, pareto, carried)
    sr2_section = read_marked_section(card_path, SR2_SECTION) if card_path.is_file() else None
    card_path.write_text(markdown)
    if sr2_section is not None:  # the x2 model's section is made by --sr2 and kept here
        write_marked_section(card_path, sr2_section, SR2_SECTION)
    (MODELS / "model_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    print(f"wrote {card_path} and {MODELS / 'model_card.json'}")


if __name__ == "__main__":
    main()
