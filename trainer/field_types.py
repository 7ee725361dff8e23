"""Checking config values against their dataclass fields' plain type hints.

JSON configs and ``--set key=value`` overrides arrive untyped: a string where a number belongs
would otherwise surface as a TypeError deep inside training. Only the simple hints are checked
(int, float, bool, str, list, dict, a list of one of those, and any of them or None); anything
richer is left to the code that uses the value.
"""

from __future__ import annotations

import dataclasses
import types
import typing

_PLAIN = (int, float, bool, str, list, dict)


def _accepts(hint: object, value: object) -> bool:
    """Whether ``value`` fits the plain ``hint`` (a list hint's elements too); True for richer hints."""
    origin = typing.get_origin(hint) or hint
    if origin not in _PLAIN:
        return True
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if not isinstance(value, origin):
        return False
    element = typing.get_args(hint)
    return origin is not list or not element or all(_accepts(element[0], item) for item in value)


def _name(hint: object) -> str:
    return str(hint) if typing.get_args(hint) else getattr(hint, "__name__", str(hint))


def check_values(cls: type, values: dict, where: str) -> None:
    """ValueError naming ``where.key`` for the first of ``values`` (field name -> value) that does
    not fit the plain type hint of ``cls``'s field of that name; other keys are not checked."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None or dataclasses.is_dataclass(hint):
            continue
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if union else (hint,)
        if value is None and type(None) in options:
            continue
        choices = [option for option in options if option is not type(None)]
        if not any(_accepts(option, value) for option in choices):
            expected = " or ".join(_name(option) for option in choices)
            raise ValueError(f"{where}.{key}: expected {expected}, got {value!r}")


def check_field_types(instance: object, where: str) -> None:
    """:func:`check_values` for every field of a dataclass instance."""
    values = {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}
    check_values(type(instance), values, where)
