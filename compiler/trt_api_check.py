"""Static TensorRT API check: does every TensorRT name a code path uses exist in that release?

TensorRT cannot be imported without libnvinfer and a GPU, but each release's small Python
bindings wheel (``tensorrt-bindings`` / ``tensorrt-cu12-bindings``, pinned and fetched by
:mod:`compiler.api_wheels`) holds a ``tensorrt.so`` whose string table names every bound
class, method, property and enum value, plus an ``__init__.py`` with the pure-Python helpers.
This module reads a source file's AST, finds the attribute names used on TensorRT objects in
each function, and checks them against a release.

Which functions run on which release comes from ``@trt_api(since, before)`` decorators in the
source (see :mod:`compiler.trt_gate`) or from an explicit ``gates`` mapping; a function
without a gate is taken to run on every release.

Limits: names are checked one at a time, not per class (``BuilderFlag.INT8`` passes on
TensorRT 11 because ``DataType.INT8`` still exists), and an identifier that is only the tail of
a longer bound name (the linker merges such strings) is accepted.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from pathlib import Path

from compiler.api_wheels import DEFAULT_CACHE, TRT_BINDINGS_WHEELS, cached_wheel
from compiler.trt_gate import SUPPORTED, in_range

BINDINGS_WHEELS = TRT_BINDINGS_WHEELS  # TensorRT version -> pinned bindings wheel requirement
# Names that hold TensorRT objects by convention (parameters, locals, ``self._x``).
TRT_RECEIVERS = frozenset({
    "trt", "tensorrt", "builder", "config", "network", "parser", "profile", "logger",
    "runtime", "engine", "context", "timing_cache", "inspector", "plan", "serialized",
    "refitter", "execution_context", "trt_runtime", "trt_logger",
})


@dataclass(frozen=True)
class ApiUse:
    """One TensorRT name used in a function."""

    function: str
    name: str
    line: int


@dataclass
class Bindings:
    """The names one TensorRT release binds."""

    version: str
    library: bytes
    python: str

    def __post_init__(self) -> None:
        self._python_names = {
            node.name if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else node.id
            for node in ast.walk(ast.parse(self.python))
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            or isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
        }

    def has(self, name: str) -> bool:
        """True if ``name`` is bound (a NUL-terminated string in the library, or in __init__.py)."""
        return name.encode() + b"\0" in self.library or name in self._python_names


def load_bindings(wheel: str | Path) -> Bindings:
    """Read a bindings wheel's ``tensorrt.so`` and ``__init__.py`` (the version from its name)."""
    wheel = Path(wheel)
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        library = next(n for n in names if n.endswith("/tensorrt.so") or n.endswith(".so") and "tensorrt" in n)
        init = next((n for n in names if n.endswith("__init__.py")), None)
        return Bindings(version, archive.read(library), archive.read(init).decode() if init else "")


def bindings_wheel(version: str, cache_dir: Path = DEFAULT_CACHE) -> Path | None:
    """The cached bindings wheel of TensorRT ``version`` (``python -m compiler.api_wheels fetch``), or None."""
    return cached_wheel(BINDINGS_WHEELS[version], cache_dir)


def _root_is_receiver(node: ast.AST, receivers: set[str]) -> bool:
    """Whether an expression chain (attributes, calls, subscripts) starts at a TensorRT object."""
    while True:
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return node.attr.lstrip("_") in receivers
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id in receivers
        else:
            return False


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    found: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = item
    return found


def _assigned_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _assigned_names(element)]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return [target.attr.lstrip("_")]
    return []


def _derived_receivers(function: ast.FunctionDef, receivers: frozenset[str]) -> set[str]:
    """``receivers`` plus the locals ``function`` assigns from them (TensorRT objects too)."""
    known = set(receivers)
    assignments = [n for n in ast.walk(function) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.With))]
    changed = True
    while changed:
        changed = False
        for node in assignments:
            pairs = []
            if isinstance(node, ast.Assign):
                pairs = [(t, node.value) for t in node.targets]
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                pairs = [(node.target, node.value)]
            elif isinstance(node, ast.With):
                pairs = [(i.optional_vars, i.context_expr) for i in node.items if i.optional_vars]
            for target, value in pairs:
                if _root_is_receiver(value, known):
                    new = set(_assigned_names(target)) - known
                    if new:
                        known |= new
                        changed = True
    return known


def function_uses(
    function: ast.FunctionDef, qualified: str, receivers: frozenset[str] = TRT_RECEIVERS, follow_locals: bool = True
) -> list[ApiUse]:
    """Attribute names used on ``receivers`` in ``function``.

    ``follow_locals``: locals assigned from a receiver count as receivers (TensorRT calls return
    TensorRT objects); off for APIs whose calls return plain values (cuda-python's tuples).
    """
    known = _derived_receivers(function, receivers) if follow_locals else set(receivers)
    uses = []
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute) and _root_is_receiver(node.value, known):
            if not (node.attr.startswith("__") and node.attr != "__version__"):
                uses.append(ApiUse(qualified, node.attr, node.lineno))
    return uses


def decorator_gates(tree: ast.Module, decorator: str = "trt_api") -> dict[str, tuple[str, str | None]]:
    """``{function: (since, before)}`` from ``@trt_api(...)`` decorators with literal arguments."""
    gates: dict[str, tuple[str, str | None]] = {}
    for name, function in _functions(tree).items():
        for item in function.decorator_list:
            call = item if isinstance(item, ast.Call) else None
            func = call.func if call else item
            if not (isinstance(func, ast.Name) and func.id == decorator):
                continue
            values = {"since": SUPPORTED, "before": None}
            if call is not None:
                for key, arg in zip(("since", "before"), call.args):
                    values[key] = ast.literal_eval(arg)
                for keyword in call.keywords:
                    values[keyword.arg] = ast.literal_eval(keyword.value)
            gates[name] = (values["since"], values["before"])
    return gates


def source_uses(
    source: str | Path, receivers: frozenset[str] = TRT_RECEIVERS, follow_locals: bool = True
) -> tuple[dict[str, list[ApiUse]], dict[str, tuple[str, str | None]]]:
    """Per-function uses (names used on ``receivers``, TensorRT's by default) and decorator gates."""
    tree = ast.parse(Path(source).read_text(), filename=str(source))
    uses = {name: function_uses(fn, name, receivers, follow_locals) for name, fn in _functions(tree).items()}
    return {k: v for k, v in uses.items() if v}, decorator_gates(tree)


def check_source(
    source: str | Path,
    bindings: Bindings,
    gates: dict[str, tuple[str, str | None]] | None = None,
    require_gates: bool = False,
) -> list[str]:
    """Problems (empty when fine) with ``source``'s TensorRT names on ``bindings.version``.

    ``gates`` overrides/extends the decorator gates; ``require_gates`` reports functions that
    use TensorRT without any gate.
    """
    uses, found_gates = source_uses(source)
    found_gates.update(gates or {})
    problems = []
    for function, items in sorted(uses.items()):
        gate = found_gates.get(function)
        if gate is None and require_gates:
            problems.append(f"{source}: {function} uses TensorRT but has no @trt_api gate")
        if gate is not None and not in_range(bindings.version, *gate):
            continue
        for use in items:
            if not bindings.has(use.name):
                problems.append(
                    f"{source}:{use.line}: {function} uses {use.name!r}, absent from TensorRT {bindings.version}"
                )
    return problems
