"""What INT8 costs in image quality: PSNR vs the clean image, fp32 ONNX against INT8 ONNX.

Uses held-out (degraded, clean) pairs from ``trainer.data.build_heldout_set`` (never seen in
training or calibration) and runs both models with ONNX Runtime on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import onnxruntime as ort

from compiler.onnx_io import cpu_session, load_model, read_contract
from compiler.samples import fit_to_multiple
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME
from trainer.metrics import psnr


class Pair(Protocol):
    """A held-out image: ``name``, ``degraded`` and ``clean`` [H, W] normalized arrays."""

    name: str
    degraded: np.ndarray
    clean: np.ndarray


@dataclass
class QualityRow:
    """PSNR (dB, normalized data range 1) of each model's output against the clean image."""

    name: str
    psnr_fp32: float
    psnr_int8: float

    @property
    def drop(self) -> float:
        """How much INT8 loses (positive = worse)."""
        return self.psnr_fp32 - self.psnr_int8


def _enhance(session: ort.InferenceSession, image: np.ndarray) -> np.ndarray:
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: image[None, None]})
    return out[0, 0]


def psnr_drop(
    fp32_onnx: str | Path, int8_onnx: str | Path, pairs: Iterable[Pair], optimization: str = "all"
) -> list[QualityRow]:
    """Per held-out image PSNR of fp32 and INT8 outputs against the clean image."""
    multiple = read_contract(load_model(fp32_onnx), source=str(fp32_onnx)).size_multiple
    fp32 = cpu_session(fp32_onnx)
    int8 = cpu_session(int8_onnx, optimization)
    rows = []
    for pair in pairs:
        degraded = fit_to_multiple(np.asarray(pair.degraded), multiple)
        clean = fit_to_multiple(np.asarray(pair.clean), multiple)
        rows.append(
            QualityRow(
                pair.name,
                psnr(_enhance(fp32, degraded), clean, data_range=1.0),
                psnr(_enhance(int8, degraded), clean, data_range=1.0),
            )
        )
    return rows


def heldout_pairs(modalities: Iterable[str]) -> list[Pair]:
    """The trainer's held-out set (default data config) for the model's modalities."""
    from trainer.data import DataConfig, build_heldout_set

    wanted = [m for m in modalities if m != "*"]
    config = DataConfig(modalities=wanted) if wanted else DataConfig()
    return list(build_heldout_set(config))


def report_lines(rows: list[QualityRow]) -> list[str]:
    """A table plus the mean drop."""
    lines = ["held-out PSNR vs clean (dB):  fp32    int8    drop"]
    for row in rows:
        lines.append(f"  {row.name[:40]:<40} {row.psnr_fp32:6.2f}  {row.psnr_int8:6.2f}  {row.drop:+.3f}")
    if rows:
        mean = float(np.mean([row.drop for row in rows]))
        lines.append(f"mean INT8 PSNR drop: {mean:+.3f} dB over {len(rows)} held-out images")
    return lines
