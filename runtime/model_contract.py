"""The contract a model file carries: what it was trained on and how to feed it.

Written by the compiler into ONNX ``metadata_props`` (and into an engine's sidecar JSON),
read here by the runtime. Every value is a string in ONNX metadata; structured values are
JSON. This module is the one place that knows the keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from runtime.logtext import cause
from runtime.normalization import CT_DEFAULT, PERCENTILE_DEFAULT, NormalizationSpec

FORMAT_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "enhanced"
_PREFIX = "medclear."
BLIND = "blind"  # the model takes only the image and was trained over a range of noise levels
# The model takes two input channels: the normalized image and a constant map of the image's
# noise level in normalized units (runtime.noise.normalized_noise_level), FFDNet-style.
NOISE_MAP = "noise_map"
INPUT_CHANNELS = {BLIND: 1, NOISE_MAP: 2}  # each noise conditioning's model input channels
SUPPORTED_NOISE_CONDITIONING = tuple(INPUT_CHANNELS)
CHANNEL_CONTENTS = {1: "the image", 2: "the image and its noise map"}  # by input channel count
MAX_SIZE_MULTIPLE = 1024  # a U-Net with 10 poolings; anything larger is not a real model
MAX_SCALE = 8
# Tasks by name and the scale their models have (output rows and columns per input one).
TASK_SCALES = {"denoise": 1, "sr2": 2}


def conditioning_for_channels(channels: int) -> str:
    """The noise conditioning of a model with ``channels`` input channels; ValueError for a
    count no conditioning has."""
    for conditioning, count in INPUT_CHANNELS.items():
        if count == channels:
            return conditioning
    raise ValueError(f"a model takes {' or '.join(f'{n} ({what})' for n, what in CHANNEL_CONTENTS.items())} "
                     f"input channel(s), not {channels}")


def task_for_scale(scale: int) -> str:
    """The contract's task name for a model of ``scale``: ``denoise`` for 1, ``sr2`` for 2."""
    return "denoise" if scale == 1 else f"sr{scale}"


class ModelContractError(ValueError):
    """A model file's metadata is missing or not one this runtime understands."""


def _default_normalization() -> dict[str, NormalizationSpec]:
    return {"CT": CT_DEFAULT, "*": PERCENTILE_DEFAULT}


@dataclass
class ModelContract:
    """Everything the runtime needs to know about a model besides its weights."""

    task: str = "denoise"
    modalities: tuple[str, ...] = ("CT",)
    normalization: dict[str, NormalizationSpec] = field(default_factory=_default_normalization)
    size_multiple: int = 8
    scale: int = 1
    precision: str = "fp32"
    model_name: str = "unknown"
    training_data: str = "unknown"
    checkpoint_sha256: str = ""
    noise_conditioning: str = BLIND
    format_version: str = FORMAT_VERSION

    def covers(self, modality: str) -> bool:
        """Whether the model is released for DICOM Modality ``modality``: listed (upper case), or ``*``."""
        return "*" in self.modalities or modality.strip().upper() in self.modalities

    def normalization_for(self, modality: str) -> NormalizationSpec:
        """The normalization for a DICOM Modality value, falling back to the ``*`` entry."""
        key = modality.upper()
        if key in self.normalization:
            return self.normalization[key]
        if "*" in self.normalization:
            return self.normalization["*"]
        raise ModelContractError(f"model has no normalization for modality {modality!r}")

    @property
    def input_channels(self) -> int:
        """Channels of the model's input: 1 (the image), 2 for a ``noise_map`` model (image, noise map)."""
        return INPUT_CHANNELS[self.noise_conditioning]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an ``[N, C, H, W]`` input: ``[N, 1, scale*H, scale*W]``."""
        n, _channels, height, width = (int(d) for d in input_shape)
        return (n, 1, height * self.scale, width * self.scale)

    def to_metadata(self) -> dict[str, str]:
        """String key/value pairs for ONNX ``metadata_props`` or an engine sidecar."""
        return {
            _PREFIX + "format_version": self.format_version,
            _PREFIX + "task": self.task,
            _PREFIX + "modalities": json.dumps(list(self.modalities)),
            _PREFIX + "normalization": json.dumps(
                {k: v.to_dict() for k, v in self.normalization.items()}, sort_keys=True
            ),
            _PREFIX + "size_multiple": str(self.size_multiple),
            _PREFIX + "scale": str(self.scale),
            _PREFIX + "precision": self.precision,
            _PREFIX + "model_name": self.model_name,
            _PREFIX + "training_data": self.training_data,
            _PREFIX + "checkpoint_sha256": self.checkpoint_sha256,
            _PREFIX + "noise_conditioning": self.noise_conditioning,
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> "ModelContract":
        """Parse metadata written by :meth:`to_metadata`; ModelContractError (one line) if absent
        or malformed."""
        def get(key: str, default: str | None = None) -> str:
            value = metadata.get(_PREFIX + key, default)
            if value is None:
                raise ModelContractError(
                    f"{source}: metadata key {_PREFIX + key!r} missing; export it with "
                    "`python -m compiler export`"
                )
            if not isinstance(value, str):
                raise ModelContractError(f"{source}: metadata key {_PREFIX + key!r} must be a string")
            return value

        version = get("format_version")
        if version != FORMAT_VERSION:
            raise ModelContractError(
                f"{source}: contract format {cause(repr(version), 40)}, this runtime reads {FORMAT_VERSION!r}"
            )
        conditioning = get("noise_conditioning", BLIND)
        if conditioning not in SUPPORTED_NOISE_CONDITIONING:
            raise ModelContractError(
                f"{source}: noise conditioning {cause(repr(conditioning), 40)} is not supported; "
                f"this runtime supports {', '.join(map(repr, SUPPORTED_NOISE_CONDITIONING))}"
            )
        try:
            return cls(
                task=get("task"),
                modalities=_modalities(get("modalities")),
                normalization=_normalization(get("normalization")),
                size_multiple=_bounded_int(get("size_multiple"), "size_multiple", 1, MAX_SIZE_MULTIPLE),
                scale=_bounded_int(get("scale", "1"), "scale", 1, MAX_SCALE),
                precision=get("precision"),
                model_name=get("model_name", "unknown"),
                training_data=get("training_data", "unknown"),
                checkpoint_sha256=get("checkpoint_sha256", ""),
                noise_conditioning=conditioning,
                format_version=version,
            )
        except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
            raise ModelContractError(f"{source}: malformed model contract: {cause(error)}") from None


def _bounded_int(text: str, key: str, low: int, high: int) -> int:
    """An integer metadata value within ``[low, high]``."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key} {text!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{key} {value} is outside {low}..{high}")
    return value


def _modalities(text: str) -> tuple[str, ...]:
    """A JSON list of modality names (or ``*``)."""
    value = json.loads(text)
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m.strip() for m in value):
        raise ValueError("modalities must be a non-empty JSON list of names")
    return tuple(m.strip().upper() for m in value)


def _normalization(text: str) -> dict[str, NormalizationSpec]:
    """A JSON object mapping modality (or ``*``) to a normalization spec."""
    value = json.loads(text)
    if not isinstance(value, dict) or not value:
        raise ValueError("normalization must be a non-empty JSON object {modality: spec}")
    specs = {}
    for modality, spec in value.items():
        if not isinstance(spec, dict):
            raise ValueError(f"normalization for {modality!r} must be a JSON object")
        specs[str(modality).upper()] = NormalizationSpec.from_dict(spec)
    return specs
