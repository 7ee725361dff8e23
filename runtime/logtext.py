"""Text that goes into log lines: one line each, control characters escaped, bounded length.

File names and library messages are data, not log structure: a newline in a file name must not
start a forged ``medclear: ...`` line, and a multi-line library message must not spread one
problem over several lines. Every file name and cause printed by the runtime passes through
``safe``; exception messages through ``cause``.
"""

from __future__ import annotations

import unicodedata

CAUSE_LIMIT = 200
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(character: str) -> str:
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe(text: object) -> str:
    """``str(text)`` with control, line/paragraph-separator and format characters escaped."""
    return "".join(
        _escape(ch) if unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cf") else ch for ch in str(text)
    )


def cause(error: BaseException | str, limit: int = CAUSE_LIMIT) -> str:
    """A message as one bounded line: whitespace runs (newlines too) become one space, then escaped."""
    text = safe(" ".join(str(error).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_error(error: BaseException) -> str:
    """An error a command line reports in one line: ``FILE: reason`` for an OSError about a file,
    else its reason (``strerror`` when it has one) or message."""
    filename = getattr(error, "filename", None)
    reason = getattr(error, "strerror", None) or error
    return f"{filename}: {reason}" if filename else str(reason)


def described(error: BaseException, limit: int = CAUSE_LIMIT) -> str:
    """``ClassName: message`` (or just the class name) as one bounded line."""
    message = cause(error, limit)
    return f"{error.__class__.__name__}: {message}" if message else error.__class__.__name__
