"""The arms of a study: how ``--arm`` specs are read, and each arm's image values for one case.

A spec is ``[LABEL=]KIND[:KEY=VALUE,...]``:

- ``original``: the file's own values;
- ``medclear`` (``strength=S``, ``model=FILE``): through the one inference path,
  ``runtime.pipeline.enhance_values``, with the default model unless ``model`` is given: the
  study's ``--model``, else (unless ``$MEDCLEAR_MODEL`` names one) the frame's modality's model
  as ``runtime.enhance`` routes files (``runtime/routing.py``: MR the MR denoiser where installed);
- ``nlm`` (``h=H``, a multiple of the estimated noise sigma): ``trainer.baselines.nlm`` on the
  image normalized by the frame's default model's contract, the way the quality benchmark runs it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from benchmarks.reader_study.manifest import Arm
from runtime.backends import Backend
from runtime.backends.select import DEFAULT_TASK
from runtime.image_contract import denormalize_frames, excluded_pixels, keep_excluded, modality_image, normalize_frames
from runtime.pipeline import check_modality, enhance_values, open_model
from runtime.routing import routed_model, routes_by_modality
from runtime.strength import check_strength

KINDS = ("original", "medclear", "nlm")
OPTIONS = {"original": (), "medclear": ("strength", "model"), "nlm": ("h",)}
DEFAULT_ARMS = ("original", "medclear", "nlm")


def parse_arm(text: str) -> tuple[str, str, dict]:
    """``(label, kind, options)`` of a spec; argparse.ArgumentTypeError (one line) if malformed."""
    head, _, rest = text.partition(":")
    label, _, kind = head.rpartition("=")
    label, kind = (label or text).strip(), kind.strip().lower()
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"arm {text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    options: dict = {}
    for pair in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or key not in OPTIONS[kind]:
            allowed = ", ".join(f"{k}=..." for k in OPTIONS[kind]) or "none"
            raise argparse.ArgumentTypeError(f"arm {text!r}: bad option {pair!r} for {kind} (allowed: {allowed})")
        options[key] = _option_value(text, key, value)
    if not label:
        raise argparse.ArgumentTypeError(f"arm {text!r}: empty label")
    if label.lower() == "equal":  # the A/B answer "no preference" is stored under that word
        raise argparse.ArgumentTypeError(f"arm {text!r}: 'equal' is reserved (an A/B answer); choose another label")
    return label, kind, options


def _option_value(text: str, key: str, value: str) -> object:
    if key == "model":
        return value
    try:
        number = float(value)
        if key == "strength":
            return check_strength(number)
        if not np.isfinite(number) or number <= 0:
            raise ValueError(f"h must be a number > 0, got {value}")
        return number
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"arm {text!r}: {error}") from None


def check_arms(specs: list[tuple[str, str, dict]]) -> list[Arm]:
    """Arms with internal ids a1, a2, ...; ValueError if fewer than two or a label repeats."""
    labels = [label for label, _, _ in specs]
    if len(specs) < 2:
        raise ValueError("a study needs at least two arms to compare")
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels must differ: {', '.join(labels)}")
    return [Arm(f"a{index}", label, kind, options) for index, (label, kind, options) in enumerate(specs, 1)]


def ab_pairs(arms: list[Arm], choice: str = "all") -> list[tuple[str, str]]:
    """The arm id pairs compared side by side; ValueError for an unknown label."""
    if choice == "none":
        return []
    if choice == "all":
        return [(a.id, b.id) for a, b in itertools.combinations(arms, 2)]
    reference = [arm for arm in arms if arm.label == choice]
    if not reference:
        raise ValueError(f"--ab {choice}: no arm has this label ({', '.join(a.label for a in arms)})")
    return [tuple(sorted((reference[0].id, arm.id), key=lambda i: int(i[1:]))) for arm in arms if arm != reference[0]]


class ArmRunner:
    """Computes each arm's modality values (HU for CT) of one frame; opens each model once."""

    def __init__(self, model: Path | None = None) -> None:
        self._default = model
        self._backends: dict[Path | None, Backend] = {}

    def backend(self, model: str | None = None, modality: str | None = None) -> Backend:
        """The opened backend of ``model``; None: the study's default model, without one (and
        without ``$MEDCLEAR_MODEL``) the model routed to ``modality`` (None: the task's default)."""
        chosen = Path(model) if model else self._default
        if chosen is None and routes_by_modality(DEFAULT_TASK, None, remote=False):
            chosen = routed_model(modality)
        if chosen not in self._backends:
            self._backends[chosen] = open_model(chosen)
        return self._backends[chosen]

    def values(self, arm: Arm, ds: Dataset, frame: int) -> np.ndarray:
        """``arm``'s float32 modality values of ``frame`` of a decoded dataset."""
        values, encoding, padding = modality_image(ds)
        image = values[frame]
        mask = padding[frame] if padding is not None else None
        if arm.kind == "original":
            return image.astype(np.float32)
        if arm.kind == "medclear":
            backend = self.backend(arm.options.get("model"), encoding.modality)
            return enhance_values(backend, image, encoding.modality, strength=arm.options.get("strength", 1.0),
                                  padding=mask)
        return self._nlm(image, encoding.modality, mask, arm.options.get("h"))

    def _nlm(self, image: np.ndarray, modality: str, mask: np.ndarray | None, h: float | None) -> np.ndarray:
        from trainer.baselines import nlm  # scikit-image: only when an NLM arm is asked for

        contract = self.backend(modality=modality).contract  # the plain medclear arm's model of this frame
        spec = contract.normalization_for(check_modality(contract, modality))
        # The pixels the medclear arm leaves out (padding, a CT's out-of-field fill), left out alike.
        excluded = excluded_pixels(image[np.newaxis], spec, None if mask is None else mask[np.newaxis])
        normalized, states = normalize_frames(image[np.newaxis], spec, excluded)
        out = denormalize_frames(nlm(normalized[0], h_per_sigma=h)[np.newaxis], states)
        return keep_excluded(out, image[np.newaxis], excluded)[0]

    def close(self) -> None:
        """Close every opened backend."""
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
