"""Where a model lives: a file on this machine or a Triton model URL (``grpc://HOST:PORT/NAME``).

A URL must stay text: ``Path`` folds its ``//``. The Triton backend parses the URL itself
(``TritonTarget.from_model_url``); here only the two kinds are told apart.
"""

from __future__ import annotations

from pathlib import Path


def is_model_url(model: str | Path) -> bool:
    """True when ``model`` names a server model (``SCHEME://...``), not a file."""
    return "://" in str(model)


def model_location(model: str | Path) -> Path | str:
    """``model`` as the run keeps it: a URL as text, a file as a Path (``~`` expanded);
    ValueError for a ``~user`` that does not exist."""
    if is_model_url(model):
        return str(model)
    try:
        return Path(str(model)).expanduser()
    except RuntimeError as error:  # pathlib's answer to an unknown ~user
        raise ValueError(f"model path {str(model)!r}: {error}") from None
