"""Protocol-buffer text format from plain data, for Triton's ``config.pbtxt``.

A message is a dict; a list is a repeated field (scalars on one line, messages one block
each); :class:`Enum` is an enum value written bare; a map field is a list of ``{"key": ...,
"value": ...}`` messages (:func:`entries`). No protobuf import: the compiler writes the text,
and the tests parse it with Triton's own ``model_config.proto`` (tritonclient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass(frozen=True)
class Enum:
    """An enum value, written without quotes (``TYPE_FP32``, ``KIND_GPU``)."""

    name: str


def entries(mapping: Mapping[str, Any]) -> list[dict]:
    """A map field's entries, sorted by key."""
    return [{"key": key, "value": mapping[key]} for key in sorted(mapping)]


def quote(text: str) -> str:
    """A text-format string literal: backslash escapes, control characters as octal."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def scalar(value: Any) -> str:
    """One scalar value in text format."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    raise TypeError(f"no text-format scalar for {type(value).__name__}")


def render(message: Mapping[str, Any], indent: int = 0) -> str:
    """``message`` as text format, two spaces per nesting level; fields in insertion order."""
    pad = "  " * indent
    lines = []
    for field, value in message.items():
        if isinstance(value, list) and not any(isinstance(item, Mapping) for item in value):
            lines.append(f"{pad}{field}: [ {', '.join(scalar(item) for item in value)} ]")
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping):
                lines.append(f"{pad}{field} {{")
                body = render(item, indent + 1)
                if body:
                    lines.append(body.rstrip("\n"))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{field}: {scalar(item)}")
    return "\n".join(lines) + ("\n" if lines else "")
