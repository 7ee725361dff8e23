"""Training configuration as plain data: nested dataclasses <-> dict <-> JSON file.

A config file holds any subset of the fields (the rest keep their defaults); the CLI's
``--set section.key=value`` overrides single values (JSON-parsed, else taken as a string).
The data section is the data layer's own ``DataConfig`` (trainer.data), kept here as a dict
so that this module does not depend on its fields.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.distill import DistillConfig
from trainer.field_types import check_values
from trainer.losses import LossConfig
from trainer.qat import QATConfig

STAGES = ("teacher", "distill", "qat")


@dataclass
class ModelSpec:
    """Which registered model to build, with its constructor kwargs."""

    name: str = "student"
    kwargs: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimizer, schedule, loop and checkpoint settings."""

    steps: int = 1000  # upper bound on optimizer steps
    max_minutes: float = 0.0  # wall-clock budget for the loop (the LR schedule follows it); 0 = off
    # Stop after this step (evaluating there) while the LR schedule still runs over ``steps``: how a
    # run cut short is reproduced. 0: run to ``steps``.
    stop_step: int = 0
    batch_size: int = 8
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays from lr to lr * min_lr_ratio
    warmup_steps: int = 0
    weight_decay: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # max grad norm; 0 = off
    eval_every: int = 100  # steps between held-out evaluations (and last.pt saves)
    patience: int = 0  # evaluations without PSNR gain before stopping; 0 = never stop early
    min_delta_db: float = 0.0
    amp: str = "auto"  # auto | fp16 | bf16 | off  (auto: fp16 on CUDA, off on CPU)
    device: str = "auto"  # auto | cpu | cuda[:N]
    seed: int = 0
    num_workers: int = 0
    threads: int = 0  # torch.set_num_threads on CPU; 0 = leave torch's default
    log_every: int = 10
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_every", "log_every"):
            if isinstance(getattr(self, name), int) and getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.lr, (int, float)) and not self.lr >= 0:  # 0: calibration-only QAT configs
            raise ValueError(f"train.lr must be >= 0, got {self.lr}")


@dataclass
class EvalConfig:
    """Held-out evaluation on full slices."""

    max_images: int = 8  # 0 = all held-out images
    data_range: float = 1.0  # PSNR/SSIM data range in normalized units (CT: the full 4095 HU)
    # Feed each percentile-normalized (MR, X-ray) image as runtime.enhance does: normalized by a
    # fit on the degraded image itself, not on its clean reference (CT's fixed HU range is the
    # same either way); the output is scored in the reference's normalization as before.
    runtime_normalization: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_images, int) and self.max_images < 0:
            raise ValueError(f"eval.max_images must be >= 0 (0 = all), got {self.max_images}")


@dataclass
class Config:
    """The full config of one training stage."""

    stage: str = "teacher"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_dict(obj: Any) -> dict:
    """Dataclass -> plain nested dict."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Plain dict -> dataclass ``cls`` (nested dataclasses too); unknown keys are an error."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    check_values(cls, data, where)  # before the dataclass's own checks compare them
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        kwargs[key] = from_dict(hint, value, f"{where}.{key}") if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.steps=20'`` -> (['train', 'steps'], 20); values are JSON, else strings."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set ``section.key=value`` overrides in a config dict (in place; returns it)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied: a top-level section (``train``, ``data``, ...) given in both
    is merged key by key; every other value, dicts inside sections included (``model.kwargs``,
    ``data.modality_weights``), is replaced whole."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A JSON config file as a dict, ``"_comment"``-style keys dropped. A file with ``"extends":
    "other.json"`` (a path relative to it) is that file with this one's values merged over it, so
    that a recipe that changes a few values of another names only those."""
    path = Path(path)
    if path.resolve() in seen:
        raise ValueError(f"{path}: 'extends' loops back to itself")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" etc.
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: 'extends' must be a file name, got {base!r}")
    return merged(read_config_file(path.parent / base, (*seen, path.resolve())), data)


def load_config(path: str | Path | None, overrides: list[str] = (), stage: str | None = None) -> Config:
    """Read a JSON config file (or defaults when ``path`` is None; see :func:`read_config_file`),
    apply overrides, validate."""
    data: dict = read_config_file(Path(path)) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    if stage is not None:
        data["stage"] = stage
    cfg = from_dict(Config, data, str(path or "config"))
    if cfg.stage not in STAGES:
        raise ValueError(f"{path or 'config'}: stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    return cfg
