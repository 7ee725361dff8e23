"""The contract a model file carries: what it was trained on and how to feed it.

Written by the compiler into ONNX ``metadata_props`` (and into an engine's sidecar JSON),
read here by the runtime. Every value is a string in ONNX metadata; structured values are
JSON. This module is the one place that knows the keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from runtime.normalization import CT_DEFAULT, PERCENTILE_DEFAULT, NormalizationSpec

FORMAT_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "enhanced"
_PREFIX = "medclear."
BLIND = "blind"  # the model takes only the image and was trained over a range of noise levels
SUPPORTED_NOISE_CONDITIONING = (BLIND,)


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

    def normalization_for(self, modality: str) -> NormalizationSpec:
        """The normalization for a DICOM Modality value, falling back to the ``*`` entry."""
        key = modality.upper()
        if key in self.normalization:
            return self.normalization[key]
        if "*" in self.normalization:
            return self.normalization["*"]
        raise ModelContractError(f"model has no normalization for modality {modality!r}")

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
        """Parse metadata written by :meth:`to_metadata`; raise ModelContractError if absent."""
        def get(key: str, default: str | None = None) -> str:
            value = metadata.get(_PREFIX + key, default)
            if value is None:
                raise ModelContractError(
                    f"{source}: metadata key {_PREFIX + key!r} missing; export it with "
                    "`python -m compiler export`"
                )
            return value

        version = get("format_version")
        if version != FORMAT_VERSION:
            raise ModelContractError(
                f"{source}: contract format {version!r}, this runtime reads {FORMAT_VERSION!r}"
            )
        conditioning = get("noise_conditioning", BLIND)
        if conditioning not in SUPPORTED_NOISE_CONDITIONING:
            raise ModelContractError(
                f"{source}: noise conditioning {conditioning!r} is not supported; "
                f"this runtime supports blind models ({BLIND!r}: the image is the only input)"
            )
        try:
            normalization = {
                k: NormalizationSpec.from_dict(v) for k, v in json.loads(get("normalization")).items()
            }
            return cls(
                task=get("task"),
                modalities=tuple(json.loads(get("modalities"))),
                normalization=normalization,
                size_multiple=int(get("size_multiple")),
                scale=int(get("scale", "1")),
                precision=get("precision"),
                model_name=get("model_name", "unknown"),
                training_data=get("training_data", "unknown"),
                checkpoint_sha256=get("checkpoint_sha256", ""),
                noise_conditioning=conditioning,
                format_version=version,
            )
        except (ValueError, TypeError, json.JSONDecodeError) as error:
            raise ModelContractError(f"{source}: malformed model contract: {error}") from error
