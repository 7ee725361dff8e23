"""What INT8 costs in image quality: PSNR vs the clean image, fp32 ONNX against INT8 ONNX.

Held-out (degraded, clean) pairs from ``trainer.data.build_heldout_set`` (never seen in
training or calibration) are turned back into modality values (HU for CT) and run through the
runtime's one inference path (``runtime.pipeline``) exactly as ``python -m runtime.enhance``
runs a DICOM file: each model normalizes the image by its own contract. PSNR is measured in
modality units with the held-out image's evaluation range as the peak (the trainer's
normalization of the clean image: CT -1024..3071 HU = 4095 HU by default; MR and X-ray its
0.5-99.5 percentile range), so it does not depend on how a model normalizes.

A super-resolution model (contract ``scale`` 2, task ``sr2``) is scored on the trainer's SR
held-out pairs instead: the degraded image is the low-resolution one, and the model's output
is compared with the clean high-resolution image (twice the rows and columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from compiler.errors import CompilerError
from compiler.verify import open_backend, psnr
from runtime.model_contract import TASK_SCALES, ModelContract, task_for_scale
from runtime.normalization import NormalizationState, denormalize, normalize
from runtime.pipeline import enhance_values


class HeldoutImage(Protocol):
    """What ``trainer.data.HeldoutImage`` offers: normalized images plus their affine map."""

    name: str
    modality: str
    degradation: str
    degraded: np.ndarray
    clean: np.ndarray
    state: NormalizationState | None


@dataclass(frozen=True)
class HeldoutPair:
    """A held-out image in modality values (HU for CT) and the PSNR's peak in those units."""

    name: str  # image name and degradation
    modality: str
    degraded: np.ndarray  # float32 (rows, cols)
    clean: np.ndarray  # float32 (rows, cols); super-resolution: (2 rows, 2 cols)
    data_range: float


@dataclass
class QualityRow:
    """PSNR (dB, peak = the evaluation range) of each model's output against the clean image."""

    name: str
    psnr_fp32: float
    psnr_int8: float

    @property
    def drop(self) -> float:
        """How much INT8 loses (positive = worse)."""
        return self.psnr_fp32 - self.psnr_int8


def _state(image: HeldoutImage) -> NormalizationState:
    if image.state is None:
        raise ValueError(f"{image.name}: held-out image carries no normalization state")
    return image.state


def heldout_values(image: HeldoutImage) -> HeldoutPair:
    """A trainer held-out image back in modality values (its normalization undone)."""
    state = _state(image)
    degraded, clean = (denormalize(a, state).astype(np.float32) for a in (image.degraded, image.clean))
    return HeldoutPair(f"{image.name} {image.degradation}", image.modality, degraded, clean, float(state.scale))


def evaluation_units(values: np.ndarray, image: HeldoutImage) -> np.ndarray:
    """Modality values in ``image``'s evaluation normalization, where trainer.metrics score."""
    return normalize(values, _state(image))


def psnr_vs_clean(output: np.ndarray, pair: HeldoutPair) -> float:
    """PSNR (dB) of an output in modality values against the pair's clean image (of its size:
    CompilerError otherwise, e.g. a super-resolution model on denoising pairs)."""
    if output.shape != pair.clean.shape:
        raise CompilerError(f"{pair.name}: output {list(output.shape)} vs clean image {list(pair.clean.shape)}; "
                            "a super-resolution model is scored on the SR held-out pairs (task sr2)")
    return psnr(output, pair.clean, data_range=pair.data_range)


def psnr_drop(
    fp32_onnx: str | Path, int8_onnx: str | Path, pairs: Iterable[HeldoutPair], optimization: str = "all"
) -> list[QualityRow]:
    """Per held-out image PSNR of the fp32 and the INT8 model's outputs against the clean image."""
    with open_backend(fp32_onnx, "onnxruntime") as fp32, open_backend(int8_onnx, "onnxruntime", optimization) as int8:
        return [
            QualityRow(
                pair.name,
                psnr_vs_clean(enhance_values(fp32, pair.degraded, pair.modality), pair),
                psnr_vs_clean(enhance_values(int8, pair.degraded, pair.modality), pair),
            )
            for pair in pairs
        ]


def heldout_task(contract: ModelContract) -> str:
    """The trainer's held-out task for a model, by its scale: ``denoise`` (1) or ``sr2`` (2);
    CompilerError for a scale the trainer has no held-out pairs for."""
    task = task_for_scale(contract.scale)
    if task not in TASK_SCALES:
        raise CompilerError(f"no held-out set for a x{contract.scale} model "
                            f"(the trainer has {', '.join(TASK_SCALES)})")
    return task


def heldout_pairs(modalities: Iterable[str], task: str = "denoise") -> list[HeldoutPair]:
    """The trainer's held-out set (default data config, ``task`` ``denoise`` or ``sr2``) for the
    model's modalities, in modality values."""
    from trainer.data import DataConfig, build_heldout_set

    wanted = [m for m in modalities if m != "*"]
    config = DataConfig(modalities=wanted, task=task) if wanted else DataConfig(task=task)
    return [heldout_values(image) for image in build_heldout_set(config)]


def report_lines(rows: list[QualityRow]) -> list[str]:
    """A table plus the mean drop."""
    width = max([len(row.name) for row in rows] + [5])
    lines = ["held-out PSNR vs clean (dB; peak: the image's evaluation range, CT 4095 HU)",
             f"  {'image':<{width}}     fp32     int8  drop"]
    for row in rows:
        lines.append(f"  {row.name:<{width}} {row.psnr_fp32:8.3f} {row.psnr_int8:8.3f}  {row.drop:+.3f}")
    if rows:
        mean = float(np.mean([row.drop for row in rows]))
        lines.append(f"mean INT8 PSNR drop: {mean:+.3f} dB over {len(rows)} held-out images")
    return lines
