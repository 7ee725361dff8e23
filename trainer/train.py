"""The training loop for all three stages, readable top to bottom (nanoGPT-style).

    teacher:  U-Net++ on (degraded, clean) patches, reconstruction loss.
    distill:  student on the same patches, reconstruction loss + KD to a frozen teacher.
    qat:      a distilled student gets INT8 quantizers (ModelOpt), is calibrated on training
              patches and fine-tuned at a lower learning rate.

Every stage: AdamW, warmup + cosine LR, mixed precision where the device supports it,
gradient clipping, held-out evaluation on full slices (PSNR/SSIM), early stopping on PSNR,
best.pt / last.pt checkpoints (resumable), a tqdm bar and a JSON-lines log (log.jsonl).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from tqdm import tqdm

from trainer import distributed
from trainer.checkpoint import load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from trainer.config import Config, ModelSpec, to_dict
from trainer.distill import DistillConfig, DistillLoss, ensembled_output
from trainer.losses import ReconstructionLoss, noise_balance_weights
from trainer.data.datasets import heldout_noise_level, model_input
from trainer.models import create_model
from trainer.models.widen import is_widening, widen_student
from trainer.models.super_resolution import rebase_upsampler
from runtime.noise import normalized_noise_level
from runtime.image_contract import denormalize_frames, normalize_frames
from runtime.normalization import denormalize, normalize


@dataclass
class DataBundle:
    """Everything the loop needs from the data layer."""

    train_set: torch.utils.data.Dataset
    validation: Sequence[Any]  # HeldoutImage-like: name, modality, degraded, clean (float32 [H, W])
    summary: dict = field(default_factory=dict)
    normalization: dict = field(default_factory=dict)  # modality -> NormalizationSpec dict, "*" fallback
    modalities: list = field(default_factory=list)


def load_data(data_cfg: dict) -> DataBundle:
    """Build the training set and the validation slices (they choose best.pt) with trainer.data;
    the test split is never loaded here."""
    from trainer.data import DataConfig, build_heldout_set, build_training_set, data_summary, normalization_table

    dcfg = DataConfig.from_dict(data_cfg)
    return DataBundle(
        train_set=build_training_set(dcfg),
        validation=build_heldout_set(dcfg, "validation"),
        summary=data_summary(dcfg),
        normalization=normalization_table(dcfg),
        modalities=list(dcfg.modalities),
    )


# ----------------------------------------------------------------------------- helpers


NEEDS_TEACHER = "the distill stage needs --teacher CKPT (a teacher checkpoint)"
NEEDS_STUDENT = "the qat stage needs --student CKPT (a distilled student checkpoint)"


def pick_device(name: str) -> torch.device:
    """``train.device`` as a torch device; ValueError for CUDA where this torch has none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"train.device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device {name!r}: this torch build or machine has no CUDA GPU "
                         "(use train.device=auto or cpu)")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp not in ("fp16", "bf16", "off"):
        raise ValueError(f"train.amp must be auto, fp16, bf16 or off, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use bf16 or off on CPU")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[amp]


def cosine_lr(step: int, progress: float, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio``
    as ``progress`` (fraction of the run done, by steps or by time budget) goes from 0 to 1."""
    if step < warmup:
        return (step + 1) / warmup
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class StepBatches(torch.utils.data.Sampler):
    """Batch indices drawn from a generator seeded by (seed, step): a resumed run sees the
    same batches as an uninterrupted one, without replaying the earlier steps."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            yield torch.randint(self.n, (self.batch_size,), generator=g).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right of [N, C, H, W] so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


# Model arguments that add layers: a config may switch them on when fine-tuning a checkpoint
# without them (--init); the new layers start at zero or as the identity, so the checkpoint's
# function is kept.
INIT_EXTENSIONS = ("noise_map", "extra_blocks", "anti_alias")


def _added_layers(value: Any) -> Any:
    """An INIT_EXTENSIONS value with every way of adding nothing (False, None, extra_blocks all 0) as None."""
    return value if value and not (isinstance(value, list) and not any(value)) else None


def init_model(path: str | Path, config_kwargs: dict) -> tuple[nn.Module, dict]:
    """The float model of checkpoint ``path`` to fine-tune, with any INIT_EXTENSIONS the config
    sets switched on (their new layers start at zero or as the identity; anti_alias's fixed blurs
    change the function, which the fine-tuning then adapts to), and widened to the
    config's ``widths`` where those are wider at some level and narrower at none
    (:func:`trainer.models.widen.widen_student`: the same function, more channels), and moved to
    the config's x2 ``base`` where it differs (:func:`trainer.models.super_resolution.rebase_upsampler`).
    The returned checkpoint dict is the file's (its ``model_kwargs`` are the unextended model's)."""
    ckpt = load_checkpoint(path)
    if ckpt["quantization"] is not None:
        raise ValueError(f"{path}: is quantized; --init needs a float checkpoint")
    old_kwargs = ckpt["model_kwargs"]
    wanted_widths = config_kwargs.get("widths")
    widen_to = wanted_widths if is_widening(old_kwargs.get("widths"), wanted_widths) else None
    rebase_to = config_kwargs.get("base") if config_kwargs.get("base", "nearest") != old_kwargs.get("base", "nearest") else None
    extensions = {k: v for k, v in config_kwargs.items()
                  if k in INIT_EXTENSIONS and _added_layers(v) != _added_layers(old_kwargs.get(k))}
    ignored = sorted(k for k, v in config_kwargs.items()
                     if k not in INIT_EXTENSIONS and v != old_kwargs.get(k)
                     and not (k == "widths" and widen_to is not None) and not (k == "base" and rebase_to is not None))
    if ignored:  # e.g. a fine-tune config written for one Pareto student, started from another
        print(f"note: --init {path}: the model is the checkpoint's ({ckpt['model_name']} "
              f"{old_kwargs}); the config's {', '.join(ignored)} not used", file=sys.stderr)
    if not extensions:
        model, _ = load_model(path)
    else:
        model = create_model(ckpt["model_name"], **{**old_kwargs, **extensions})
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
        if unexpected or not missing:
            raise ValueError(f"{path}: cannot extend this checkpoint with {sorted(extensions)} "
                             f"(unexpected {unexpected[:3]}, missing {missing[:3]})")
    if widen_to is not None:
        print(f"note: --init {path}: widths {old_kwargs['widths']} widened to {list(widen_to)}", file=sys.stderr)
        model = widen_student(model, widen_to)
    if rebase_to is not None:
        print(f"note: --init {path}: x2 base {old_kwargs.get('base', 'nearest')} -> {rebase_to}, the tail restarts "
              "at zero (the model starts as its new base)", file=sys.stderr)
        model = rebase_upsampler(model, rebase_to)
    return model, ckpt


def takes_noise_map(model: nn.Module) -> bool:
    """Whether ``model`` is a noise-map model (two input channels: the image and its noise level)."""
    return getattr(model, "input_channels", 1) == 2


def heldout_level(model: nn.Module, image: Any) -> float | None:
    """The noise level ``model`` is given for a held-out image: the runtime's measurement for a
    noise-map model, None for a blind one."""
    return heldout_noise_level(image) if takes_noise_map(model) else None


def enhance_heldout(model: nn.Module, image: Any, device: torch.device, runtime_normalization: bool = False) -> np.ndarray:
    """A held-out image through ``model``, in the image's (its clean reference's) normalization.
    ``runtime_normalization``: a percentile-normalized image is fed as ``runtime.enhance`` feeds
    it, normalized by a fit on the degraded image (whose noise widens its percentiles) and told
    the noise level measured there, and its output brought back to the reference's normalization.
    CT is fed as it is, a scanner's out-of-field fill included (the runtime feeds that as air since
    the twelfth session; validation keeps its recorded behaviour so that recorded best.pt choices
    reproduce)."""
    spec = getattr(image, "spec", None)
    if not runtime_normalization or spec is None or spec.kind == "hu_linear":
        return enhance_slice(model, image.degraded, device, heldout_level(model, image))
    values = denormalize(image.degraded, image.state).astype(np.float32)[None]
    frames, states = normalize_frames(values, spec)  # a percentile fit as runtime.pipeline.enhance_values makes it
    level = normalized_noise_level(frames, states, image.modality) if takes_noise_map(model) else None
    enhanced = enhance_slice(model, frames[0], device, level)[None]
    return normalize(denormalize_frames(enhanced, states)[0], image.state)


@torch.no_grad()
def enhance_slice(model: nn.Module, image: np.ndarray, device: torch.device, level: float | None = None) -> np.ndarray:
    """Run ``model`` on one full [H, W] normalized slice (with its noise ``level`` for a
    noise-map model): pad to size_multiple, crop back (to ``scale`` times the input for
    super-resolution models)."""
    x = torch.from_numpy(model_input(image, level))[None].to(device)
    y = model(pad_to_multiple(x, model.size_multiple))
    scale = int(getattr(model, "scale", 1))
    return y[0, 0, : scale * image.shape[0], : scale * image.shape[1]].float().cpu().numpy()


def display_psnr(pred: np.ndarray, image: Any, data_range: float) -> float:
    """PSNR as a reader sees the image: CT the mean of the soft-tissue (W400/L40) and lung
    (W1500/L-600) window PSNRs, other modalities the normalized image clipped to [0, 1]
    (trainer.metrics.image_quality). Images without a normalization spec (toy data): plain
    PSNR over ``data_range``."""
    from trainer.metrics import image_quality, psnr

    if getattr(image, "spec", None) is None:
        return float(psnr(pred, image.clean, data_range=data_range))
    quality = image_quality(pred, image.clean, image.modality, image.spec, with_fsim=False, with_ssim=False)
    if "psnr_window" in quality:
        return float((quality["psnr_window"] + quality["psnr_lung"]) / 2.0)
    return float(quality["psnr"])


def input_baseline(image: Any) -> np.ndarray:
    """What the model is compared with as ``psnr_input``: the degraded image itself, or for a
    super-resolution pair (low-resolution ``degraded``) its bicubic upsampling."""
    if image.degraded.shape == image.clean.shape:
        return image.degraded
    from trainer.baselines import upscale

    return upscale(image.degraded, "bicubic", image.clean.shape[0] // image.degraded.shape[0])


def evaluate(model: nn.Module, images: Sequence[Any], cfg: Config, device: torch.device) -> dict:
    """Validation PSNR (:func:`display_psnr`) and SSIM (normalized units, data range
    cfg.eval.data_range) on full slices, beside ``psnr_input`` (:func:`input_baseline`): the
    mean per modality (``psnr_CT``, ...) and, as ``psnr``/``ssim``, the mean over modalities, so
    that a modality with many small validation frames does not outvote the others. A modality
    whose images come from more than one source is also reported per source
    (``psnr_CT_offline``, ``psnr_CT_phantom``, ...): a mean over real scans and phantoms can hide
    a loss on the scans. Only ``psnr`` chooses checkpoints."""
    from trainer.metrics import ssim

    images = list(images)[: cfg.eval.max_images or None]
    if not images:
        return {}
    was_training = model.training
    model.eval()
    rng = cfg.eval.data_range
    per_modality: dict[str, dict[str, list[float]]] = {}
    per_source: dict[str, dict[str, dict[str, list[float]]]] = {}  # modality -> source -> PSNRs
    for img in images:
        pred = enhance_heldout(model, img, device, cfg.eval.runtime_normalization)
        modality, name = getattr(img, "modality", "*"), str(getattr(img, "name", ""))
        source = name.split(":", 1)[0] if ":" in name else "*"  # "offline:...", "phantom:..."
        scores = per_modality.setdefault(modality, {"psnr": [], "ssim": [], "psnr_input": []})
        psnrs = per_source.setdefault(modality, {}).setdefault(source, {"psnr": [], "psnr_input": []})
        for key, value in (("psnr", display_psnr(pred, img, rng)), ("psnr_input", display_psnr(input_baseline(img), img, rng))):
            scores[key].append(value)
            psnrs[key].append(value)
        scores["ssim"].append(float(ssim(pred, img.clean, data_range=rng)))
    model.train(was_training)
    means = {m: {k: float(np.mean(v)) for k, v in scores.items()} for m, scores in per_modality.items()}
    result = {k: float(np.mean([means[m][k] for m in means])) for k in ("psnr", "ssim", "psnr_input")}
    for modality, values in sorted(means.items()):
        result.update({f"{k}_{modality}": v for k, v in values.items()})
        if len(per_source[modality]) > 1:
            for source, psnrs in sorted(per_source[modality].items()):
                result.update({f"{k}_{modality}_{source}": float(np.mean(v)) for k, v in psnrs.items()})
    return result


class JsonlLog:
    """Append-only JSON-lines log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- the loop


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    teacher: str | Path | None = None,
    student: str | Path | None = None,
    data: DataBundle | None = None,
    init: str | Path | None = None,
) -> dict:
    """Run one stage (cfg.stage) into ``out_dir``; returns the final held-out metrics.

    ``teacher``: teacher checkpoint (distill). ``student``: distilled student checkpoint (qat; with
    ``qat.float_kd`` > 0 it is also the frozen teacher its quantized copy distils from).
    ``init``: float checkpoint whose model and weights start a teacher or distill run (fine-tuning
    with a fresh optimizer and schedule; the config's model spec is replaced by the checkpoint's,
    except for the extensions :func:`init_model` applies: ``noise_map``, student ``extra_blocks``,
    wider student ``widths`` and another x2 ``base``).
    ``data``: prebuilt data (tests); by default built from cfg.data with trainer.data.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    world = distributed.start(pick_device(tc.device))  # torchrun: one process per device; else alone
    device = world.device
    amp_dtype = autocast_dtype(tc.amp, device)
    if tc.threads > 0 and device.type == "cpu":
        torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    last_path = out / "last.pt"
    if not resume and cfg.stage == "qat" and student is None:  # said before minutes of data building
        raise ValueError(NEEDS_STUDENT)
    if not resume and cfg.stage == "distill" and teacher is None:
        raise ValueError(NEEDS_TEACHER)
    resumed = load_checkpoint(last_path) if resume else None
    if resumed is not None and resumed["stage"] != cfg.stage:
        raise ValueError(f"{last_path}: is a {resumed['stage']} checkpoint, cannot resume the {cfg.stage} stage")
    if data is None:
        data = load_data(cfg.data)

    # --- model(s) for this stage
    teacher_model = None
    fp32_metrics: dict = {}
    if resumed is not None:
        model = model_from_checkpoint(resumed)
        teacher = teacher or resumed.get("teacher_checkpoint")
    elif init is not None:
        if cfg.stage == "qat":
            raise ValueError("--init is for the teacher and distill stages; qat starts from --student")
        model, init_ckpt = init_model(init, cfg.model.kwargs)
    elif cfg.stage == "qat":  # not resumed: --student was given (checked above)
        model, student_ckpt = load_model(student)
        if student_ckpt["quantization"] is not None:
            raise ValueError(f"{student}: is already quantized; qat needs the float (distilled) student")
    else:
        try:
            model = create_model(cfg.model.name, **cfg.model.kwargs)
        except TypeError as error:  # an unknown or misspelled model.kwargs key
            raise ValueError(f"model.kwargs for {cfg.model.name!r}: {error}") from None
    model.to(device)
    cfg.model = ModelSpec(model.model_name, dict(model.model_kwargs))  # qat: the model comes from --student
    if takes_noise_map(model) != bool(cfg.data.get("noise_map", False)):
        raise ValueError("a noise-map model (model.kwargs.noise_map) needs data.noise_map true, and only it")
    if cfg.stage == "qat":
        # Only a float_kd QAT has a teacher: the float student (on --resume, the one its checkpoint recorded).
        teacher = (student or teacher) if cfg.qat.float_kd > 0 else None
    if cfg.stage == "distill" and teacher is None:  # a resumed run that recorded none
        raise ValueError(NEEDS_TEACHER)
    if cfg.stage in ("distill", "qat") and teacher is not None:
        teacher_model, _ = load_model(teacher)
        teacher_model.to(device).requires_grad_(False)

    # --- QAT: measure the float student, then insert and calibrate quantizers
    if cfg.stage == "qat" and resumed is None:
        from trainer.qat import quantize

        fp32_metrics = evaluate(model, data.validation, cfg, device) if world.is_main else {}
        calib = StepBatches(len(data.train_set), tc.batch_size, tc.seed + 1, 0, cfg.qat.calib_batches)
        calib_loader = torch.utils.data.DataLoader(data.train_set, batch_sampler=calib, num_workers=tc.num_workers)

        def calibrate(m: nn.Module) -> None:
            for degraded, _ in calib_loader:
                m(degraded.to(device))

        model = quantize(model, calibrate, cfg.qat.skip_modules)
    elif cfg.stage == "qat":
        fp32_metrics = resumed["metrics"].get("fp32", {})
    model.train()
    forward = world.forward(model)  # model.forward_with_aux; across processes in DistributedDataParallel

    # --- losses, optimizer, schedule
    recon = ReconstructionLoss(cfg.loss).to(device)
    # Both KD weights 0: supervised fine-tuning of a student, the teacher is not run at all.
    kd_cfg = (DistillConfig(output_kd=cfg.qat.float_kd, teacher_ensemble=cfg.qat.float_kd_ensemble)
              if cfg.stage == "qat" else cfg.distill)
    distilling = teacher_model is not None and (kd_cfg.output_kd > 0 or kd_cfg.feature_kd > 0)
    kd = DistillLoss(kd_cfg, model, teacher_model).to(device) if distilling else None
    teacher_input_channels = 2 if teacher_model is not None and takes_noise_map(teacher_model) else 1
    params = list(model.parameters()) + (list(kd.parameters()) if kd is not None else [])
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    disc_opt = (
        torch.optim.AdamW(recon.discriminator.parameters(), lr=cfg.loss.disc_lr, betas=(0.9, 0.999))
        if recon.discriminator is not None
        else None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    step, best_psnr, bad_evals, metrics, elapsed_before = 0, -math.inf, 0, {}, 0.0
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        extra = resumed["extra_modules"]
        if kd is not None:
            kd.load_state_dict(extra["kd"])
        if disc_opt is not None:
            recon.load_state_dict(extra["recon"])
            disc_opt.load_state_dict(extra["disc_opt"])
        step, best_psnr, bad_evals = resumed["step"], resumed["best_psnr"], resumed["bad_evals"]
        elapsed_before = resumed["elapsed_s"]
        metrics = resumed["metrics"].get("validation", {})
        set_rng_state(resumed["rng"])

    if resumed is None and world.is_main and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()  # a fresh run's log is its own (its checkpoints replace the old ones too)
    log = JsonlLog(out / "log.jsonl") if world.is_main else distributed.SilentLog()
    t0 = time.perf_counter()
    budget_s = tc.max_minutes * 60

    def elapsed() -> float:
        """Training seconds so far, across resumes (data building not counted)."""
        return elapsed_before + time.perf_counter() - t0

    def progress() -> float:
        """Fraction of the run done: by steps, or by the time budget when that comes first."""
        return max(step / tc.steps, world.from_main(elapsed()) / budget_s if budget_s > 0 else 0.0)

    quantization_info = None

    def checkpoint(path: Path) -> None:
        nonlocal quantization_info
        if not world.is_main:
            return
        if cfg.stage == "qat" and quantization_info is None:
            from trainer.qat import quantization_info as describe

            quantization_info = describe(model, cfg.qat.skip_modules)
        save_checkpoint(
            path,
            model,
            config=to_dict(cfg),
            data_summary=data.summary,
            normalization=data.normalization,
            modalities=data.modalities,
            quantization=quantization_info,
            stage=cfg.stage,
            metrics={"validation": metrics, "fp32": fp32_metrics, "best_psnr": best_psnr},
            step=step,
            best_psnr=best_psnr,
            bad_evals=bad_evals,
            teacher_checkpoint=str(teacher) if teacher is not None else None,
            optimizer=optimizer.state_dict(),
            elapsed_s=elapsed(),
            scaler=scaler.state_dict(),
            extra_modules={
                "kd": kd.state_dict() if kd is not None else {},
                "recon": recon.state_dict(),
                "disc_opt": disc_opt.state_dict() if disc_opt is not None else {},
            },
            rng=rng_state(),
        )

    if resumed is None:
        log.write({"event": "start", "stage": cfg.stage, "config": to_dict(cfg), "fp32": fp32_metrics,
                   "init": str(init) if init is not None else None})
        if init is not None and world.is_main:  # the starting point, so that the log shows what fine-tuning gained
            log.write({"step": 0, "eval": evaluate(model, data.validation, cfg, device)})
    if world.active:
        log.write({"event": "distributed", "world_size": world.world_size,
                   "global_batch": world.global_batch(tc.batch_size), "device": str(device)})
    start_step = step
    loader = torch.utils.data.DataLoader(
        data.train_set,
        batch_sampler=world.shard(
            StepBatches(len(data.train_set), world.global_batch(tc.batch_size), tc.seed, start_step, tc.steps)),
        num_workers=tc.num_workers,
    )
    bar = tqdm(total=tc.steps, initial=step, desc=cfg.stage, disable=not tc.progress or not world.is_main,
               dynamic_ncols=True)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext
    )
    stopped_early = out_of_time = False
    try:
        for degraded, clean in loader:
            degraded, clean = degraded.to(device), clean.to(device)
            lr = tc.lr * cosine_lr(step, progress(), tc.warmup_steps, tc.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Forward: the model, its reconstruction loss, and KD against the frozen teacher.
            with autocast():
                pred, aux = forward(degraded)
                outputs = aux["deep"] if len(aux["deep"]) > 1 else [pred]  # deep supervision
                image = degraded[:, :1]  # without a noise-map channel
                weights = (noise_balance_weights(image, clean, cfg.loss.noise_balance, cfg.loss.noise_balance_power)
                           if cfg.loss.noise_balance > 0 else None)
                losses = [recon(o, clean, weights) for o in outputs]
                loss = sum(l for l, _ in losses) / len(losses)
                parts = losses[-1][1]
                if kd is not None:
                    with torch.no_grad():
                        t_input = degraded[:, :teacher_input_channels]
                        t_pred, t_aux = (teacher_model.forward_with_aux(t_input) if kd_cfg.teacher_ensemble == 1 else
                                         (ensembled_output(teacher_model, t_input, kd_cfg.teacher_ensemble), {}))
                    kd_loss, kd_parts = kd(pred, aux, t_pred, t_aux)
                    loss = loss + kd_loss
                    parts.update(kd_parts)
            # Backward, clip, step.
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            world.average_gradients(kd.parameters() if kd is not None else ())  # DDP averages the model's
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if disc_opt is not None:  # adversarial: one discriminator step per generator step
                disc_opt.zero_grad(set_to_none=True)
                recon.discriminator_loss(pred, clean).backward()
                world.average_gradients(recon.discriminator.parameters())
                disc_opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{metrics.get('psnr', float('nan')):.2f}",
                            ssim=f"{metrics.get('ssim', float('nan')):.3f}")
            if step % tc.log_every == 0:
                log.write({"step": step, "loss": loss.item(), **parts, "lr": lr,
                           "steps_per_s": (step - start_step) / max(1e-9, time.perf_counter() - t0)})
            # Evaluate on held-out full slices; keep the best, stop when it stops improving.
            out_of_time = budget_s > 0 and world.agree(elapsed() >= budget_s)
            cut_short = step == tc.stop_step
            if step % tc.eval_every == 0 or step == tc.steps or out_of_time or cut_short:
                metrics = evaluate(model, data.validation, cfg, device) if world.is_main else {}
                improved = metrics.get("psnr", -math.inf) > best_psnr + tc.min_delta_db
                if improved or not metrics:
                    best_psnr, bad_evals = metrics.get("psnr", best_psnr), 0
                    checkpoint(out / "best.pt")
                else:
                    bad_evals += 1
                log.write({"step": step, "eval": metrics, "best_psnr": best_psnr})
                stopped_early = world.agree(tc.patience > 0 and bad_evals >= tc.patience)  # rank 0 decides
                checkpoint(last_path)
                if stopped_early or out_of_time or cut_short:
                    break
    except KeyboardInterrupt:
        checkpoint(last_path)  # --resume continues from here
        raise
    finally:
        bar.close()
    result = {"stage": cfg.stage, "step": step, "validation": metrics, "best_psnr": best_psnr,
              "stopped_early": stopped_early,
              "out_of_time": out_of_time, "elapsed_s": elapsed(), "fp32": fp32_metrics}
    if fp32_metrics and metrics:
        result["qat_minus_fp32_db"] = metrics["psnr"] - fp32_metrics["psnr"]
    if world.active:
        digests = world.replica_digests(model)
        log.write({"event": "replicas", "weights_sha256": digests, "agree": len(set(digests)) == 1})
    log.write({"event": "end", **result})
    world.close()
    return result
