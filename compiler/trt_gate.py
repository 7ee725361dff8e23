"""TensorRT, imported lazily, and version gates for the code paths that differ between releases.

A function that touches TensorRT carries ``@trt_api(since, before)``; the build picks the
variant whose range holds the installed version, and :mod:`compiler.trt_api_check` reads the
same decorators from the source to check each variant's TensorRT names against that release's
bindings. One declaration drives both, so they cannot drift apart.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, TypeVar

from compiler.errors import CompilerError
from runtime.engine_sidecar import version_tuple

F = TypeVar("F", bound=Callable)
SUPPORTED = "8.5"  # oldest TensorRT the compiler supports (JetPack 5)


def in_range(version: str, since: str, before: str | None) -> bool:
    """True when ``since <= version < before`` (``before`` None: no upper bound)."""
    v = version_tuple(version)
    if v < version_tuple(since):
        return False
    return before is None or v < version_tuple(before)


def trt_api(since: str = SUPPORTED, before: str | None = None) -> Callable[[F], F]:
    """Mark a function as using TensorRT releases ``since <= version < before``.

    Arguments must be string literals: the static API check reads them from the source.
    """

    def mark(function: F) -> F:
        function.trt_since = since  # type: ignore[attr-defined]
        function.trt_before = before  # type: ignore[attr-defined]
        return function

    return mark


def select(version: str, *variants: Callable) -> Callable:
    """The one variant whose ``@trt_api`` range holds ``version``; CompilerError if none."""
    matches = [f for f in variants if in_range(version, f.trt_since, f.trt_before)]
    if len(matches) != 1:
        names = ", ".join(f.__name__ for f in variants)
        raise CompilerError(f"TensorRT {version}: no single supported code path among {names}")
    return matches[0]


def require(version: str, function: Callable, what: str) -> Callable:
    """``function`` if its ``@trt_api`` range holds ``version``, else a CompilerError naming ``what``."""
    since, before = function.trt_since, function.trt_before
    if not in_range(version, since, before):
        span = f">= {since}" + (f" and < {before}" if before else "")
        raise CompilerError(f"{what} needs TensorRT {span} (this is {version})")
    return function


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module; CompilerError (one line) where it is not installed or too old."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise CompilerError(
            f"TensorRT is not available here ({error}); build and check engines on the target: "
            "JetPack ships it, on a server `pip install tensorrt` (see docs/COMPILER.md)"
        ) from error
    except Exception as error:  # e.g. OSError from a missing libnvinfer / CUDA library
        raise CompilerError(f"TensorRT failed to load ({type(error).__name__}: {error})") from error
    if version_tuple(trt.__version__) < version_tuple(SUPPORTED):
        raise CompilerError(f"TensorRT {trt.__version__} is too old; medclear needs >= {SUPPORTED}")
    return trt
