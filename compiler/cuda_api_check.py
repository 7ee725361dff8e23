"""Static cuda-python API check: does every CUDA runtime name the TensorRT backend uses exist?

cuda-python cannot run without an NVIDIA driver, but its ``cuda-bindings`` wheel (pinned and
fetched by :mod:`compiler.api_wheels`) ships the Cython source of ``cuda.bindings.runtime``:
``runtime.pyx`` defines every function (``def cudaMallocHost(size_t size):``) and enum
(``class cudaMemcpyKind(IntEnum):`` with its members), ``runtime.pxd`` the handle classes
(``cdef class cudaStream_t``). This module reads them, checks the names that
``runtime/backends/cuda_memory.py`` uses on ``self.cudart``, and gives the test fakes of
cuda-python the real parameter lists to match.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from compiler.trt_api_check import source_uses

RUNTIME_SOURCES = ("cuda/bindings/runtime.pyx", "cuda/bindings/runtime.pxd")
CUDA_RECEIVERS = frozenset({"cudart"})
_DEF = re.compile(r"^def (\w+)\((.*?)\):", re.MULTILINE | re.DOTALL)
_CLASS = re.compile(r"^(?:cdef )?class (\w+)")
_MEMBER = re.compile(r"^    (\w+) = ")


@dataclass
class CudaBindings:
    """The names ``cuda.bindings.runtime`` defines: functions with their parameters, classes with members."""

    version: str
    functions: dict[str, list[str]] = field(default_factory=dict)
    classes: dict[str, set[str]] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        """True if ``name`` is a function, a class, or a member of an enum class."""
        return name in self.functions or name in self.classes or any(name in m for m in self.classes.values())


def _parameter_name(text: str) -> str:
    """``'size_t size'`` -> ``size``; ``'kind not None : cudaMemcpyKind'`` -> ``kind``."""
    declaration = text.split("=")[0].split(":")[0].replace("not None", "")
    return declaration.split()[-1].lstrip("*")


def parse_runtime_source(text: str, bindings: CudaBindings) -> None:
    """Add the functions (``def`` at top level) and classes with their members found in ``text``."""
    for match in _DEF.finditer(text):
        parameters = [p for p in match.group(2).replace("\n", " ").split(",") if p.strip()]
        bindings.functions[match.group(1)] = [_parameter_name(p) for p in parameters]
    current: set[str] | None = None
    for line in text.splitlines():
        if match := _CLASS.match(line):
            current = bindings.classes.setdefault(match.group(1), set())
        elif line and not line[0].isspace():
            current = None
        elif current is not None and (match := _MEMBER.match(line)):
            current.add(match.group(1))


def load_cuda_bindings(wheel: str | Path) -> CudaBindings:
    """Read ``runtime.pyx``/``runtime.pxd`` from a ``cuda-bindings`` wheel (the version from its name)."""
    wheel = Path(wheel)
    bindings = CudaBindings(version=wheel.name.split("-")[1])
    with zipfile.ZipFile(wheel) as archive:
        for name in RUNTIME_SOURCES:
            parse_runtime_source(archive.read(name).decode(), bindings)
    return bindings


def check_cuda_source(source: str | Path, bindings: CudaBindings) -> list[str]:
    """Problems (empty when fine): names used on ``cudart`` in ``source`` that cuda-python lacks."""
    uses, _ = source_uses(source, CUDA_RECEIVERS, follow_locals=False)
    return [
        f"{source}:{use.line}: {function} uses {use.name!r}, absent from cuda-bindings {bindings.version}"
        for function, items in sorted(uses.items())
        for use in items
        if not bindings.has(use.name)
    ]
