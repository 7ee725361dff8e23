"""The one interface every inference backend has (Polygraphy's runner shape).

A backend is created cheaply, ``open()`` loads the model and allocates everything once,
``infer(batch)`` maps a float32 ``[N, C, H, W]`` batch to the model's output, and ``close()``
frees it. It is a context manager, and it exposes the model's contract and input limits. C is
the contract's ``input_channels``: 1 (the image), 2 for a ``noise_map`` model (the image and
its noise map, which ``runtime.pipeline`` adds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.engine_sidecar import sha256_file
from runtime.model_contract import CHANNEL_CONTENTS, ModelContract


class BackendError(RuntimeError):
    """A model could not be loaded or run; the message says why and what to do.

    ``runtime_hint`` is advice in terms of ``runtime.enhance``'s options (``--backend ...``): it
    ends the message, and ``reason`` holds the message without it, for tools that have no such
    option (``compiler verify``)."""

    def __init__(self, reason: str, runtime_hint: str = "") -> None:
        super().__init__(f"{reason} or {runtime_hint}" if runtime_hint else reason)
        self.reason, self.runtime_hint = reason, runtime_hint


@dataclass(frozen=True)
class InputConstraints:
    """What shapes a model accepts: ``channels`` channels, H and W multiples of ``size_multiple``,
    within min/max.

    ``min_shape``/``max_shape`` are ``(N, C, H, W)``; ``None`` means unbounded (an ONNX model
    with dynamic axes). A TensorRT engine's optimization profile bounds them.
    """

    name: str
    size_multiple: int
    min_shape: tuple[int, int, int, int] | None = None
    max_shape: tuple[int, int, int, int] | None = None
    channels: int = 1  # the contract's input_channels

    @property
    def max_batch(self) -> int | None:
        """Largest batch the model takes, or None when unbounded."""
        return self.max_shape[0] if self.max_shape else None

    @property
    def max_side(self) -> int | None:
        """Largest tile side (min of max H and max W) the model takes, or None."""
        return min(self.max_shape[2], self.max_shape[3]) if self.max_shape else None

    @property
    def min_side(self) -> int:
        """Smallest H/W the model takes (at least one size multiple)."""
        low = min(self.min_shape[2], self.min_shape[3]) if self.min_shape else 1
        return max(low, self.size_multiple)

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise BackendError if ``shape`` is not an ``[N, C, H, W]`` the model accepts."""
        if len(shape) != 4 or shape[1] != self.channels:
            meaning = CHANNEL_CONTENTS.get(self.channels, "the model's channels")
            raise BackendError(f"input must be [N, {self.channels}, H, W] ({meaning}), got {list(shape)}")
        if shape[2] % self.size_multiple or shape[3] % self.size_multiple:
            raise BackendError(f"H and W must be multiples of {self.size_multiple}, got {list(shape)}")
        for bound, inside in ((self.min_shape, np.greater_equal), (self.max_shape, np.less_equal)):
            if bound is not None and not all(inside(shape, bound)):
                raise BackendError(
                    f"input shape {list(shape)} outside the model's range "
                    f"{list(self.min_shape or ())}..{list(self.max_shape or ())}"
                )


class Backend(ABC):
    """Base class: subclasses implement ``_open``, ``_infer`` and ``_close``."""

    kind = "abstract"

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        self._contract: ModelContract | None = None
        self._constraints: InputConstraints | None = None
        self.is_open = False

    @property
    def contract(self) -> ModelContract:
        """The model's contract (available after ``open()``)."""
        if self._contract is None:
            raise BackendError(f"{self.kind} backend for {self.model_path} is not open")
        return self._contract

    @property
    def constraints(self) -> InputConstraints:
        """The model's input constraints (available after ``open()``)."""
        if self._constraints is None:
            raise BackendError(f"{self.kind} backend for {self.model_path} is not open")
        return self._constraints

    def describe(self) -> str:
        """A short human-readable name, e.g. ``onnxruntime (CPUExecutionProvider)``."""
        return self.kind

    @property
    def preferred_batch(self) -> int | None:
        """Frames or tiles per call this backend asks for when the caller does not choose
        (None: the caller's default; a server backend sends them as concurrent requests)."""
        return None

    @property
    def source(self) -> str:
        """Where the model comes from, for messages: its file (a server backend: its address)."""
        return str(self.model_path)

    def model_id(self) -> str:
        """What identifies the model's bytes in derived images: the sha256 of its file."""
        return sha256_file(self.model_path)

    def _check_source(self) -> None:
        """Raise BackendError when the model is not there (a local file by default)."""
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: model file not found")

    def open(self) -> "Backend":
        """Load the model and allocate buffers once; idempotent."""
        if not self.is_open:
            self._check_source()
            try:
                self._open()
            except BaseException:
                self._close()  # free whatever a half-finished open allocated
                raise
            self.is_open = True
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a float32 ``[N, C, H, W]`` batch; returns the ``[N, 1, sH, sW]`` output."""
        if not self.is_open:
            self.open()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.constraints.check(batch.shape)
        return self._infer(batch)

    def close(self) -> None:
        """Free what ``open()`` allocated; idempotent."""
        if self.is_open:
            self._close()
            self.is_open = False

    def __enter__(self) -> "Backend":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _close(self) -> None: ...
