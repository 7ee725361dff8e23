"""The API names a fake module offers, for checking them against the real bindings.

A fake's public surface is: the module's public attributes (plus ``__version__``); for each
class, its public methods, properties and class attributes, the public attributes its methods
assign on ``self``, and, for enums, the member names. Anything starting with ``_`` is the
fake's own machinery and is not checked.
"""

from __future__ import annotations

import ast
import enum
import inspect
import textwrap
import types


def _self_attributes(cls: type) -> set[str]:
    """Public names the class's methods assign on ``self``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # made by enum's functional API: no source
        return set()
    return {
        target.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
    }


def class_names(cls: type) -> set[str]:
    """Public names a class offers (enum members included), its own and its fake bases'."""
    if issubclass(cls, enum.Enum):
        return set(cls.__members__)
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__ in ("builtins", "enum"):
            continue
        names |= set(vars(klass)) | _self_attributes(klass)
        for nested in (value for value in vars(klass).values() if isinstance(value, type)):
            names |= class_names(nested)
    return {n for n in names if not n.startswith("_")}


def module_names(module: types.ModuleType) -> dict[str, set[str]]:
    """``{public attribute: names it offers}`` (a function offers only its own name)."""
    offered = {"__version__": set()} if hasattr(module, "__version__") else {}
    for name, value in vars(module).items():
        if not name.startswith("_"):
            offered[name] = class_names(value) if isinstance(value, type) else set()
    return offered
