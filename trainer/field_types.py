"""Checking a config dataclass's values against its fields' plain type hints.

JSON configs and ``--set key=value`` overrides arrive untyped: a string where a number belongs
would otherwise surface as a TypeError deep inside training. Only the simple hints are checked
(int, float, bool, str, list, dict, and those or None); anything richer is left to the code
that uses the value.
"""

from __future__ import annotations

import dataclasses
import types
import typing

_PLAIN = (int, float, bool, str, list, dict)


def _accepts(hint: type, value: object) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_field_types(instance: object, where: str) -> None:
    """ValueError naming ``where.field`` for the first value that does not fit its plain hint."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        hint, value = hints[field.name], getattr(instance, field.name)
        origin = typing.get_origin(hint)
        options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
        plain = [typing.get_origin(option) or option for option in options if option is not type(None)]
        if not plain or not all(option in _PLAIN for option in plain):
            continue  # a dataclass or a richer hint: not checked here
        if value is None and type(None) in options:
            continue
        if not any(_accepts(option, value) for option in plain):
            expected = " or ".join(option.__name__ for option in plain)
            raise ValueError(f"{where}.{field.name}: expected {expected}, got {value!r}")
