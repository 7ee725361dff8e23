"""The fixed three-way split: a stable hash of an image group's key.

A group is every copy of one image (the same slice stored in several transfer syntaxes,
lossless and lossy, or cropped) plus, for multi-frame files, all frames of the file. The
salted SHA-256 of its key, read as a number ``v`` in [0, 1), decides: ``v < test_fraction``
is test (held out, only reported), ``v < test_fraction + validation_fraction`` is
validation (chooses checkpoints, recipes and baseline settings), the rest trains. The key is
a name, not decoded pixels, so a new decoder version or added files never move an image
between the sets. The salt was fixed once (docs/DATA.md).
"""

from __future__ import annotations

import hashlib

SPLIT_SALT = "medclear-heldout-v55"  # chosen once, see docs/DATA.md


def split_value(group_key: str) -> float:
    """A stable number in [0, 1) for ``group_key``."""
    digest = hashlib.sha256(f"{SPLIT_SALT}/{group_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


SPLITS = ("train", "validation", "test")
# Keys with these prefixes (phantoms) are assigned by name, not by hash.
_NAMED = {"train:": "train", "validation:": "validation", "heldout:": "test"}


def split_of(group_key: str, test_fraction: float, validation_fraction: float = 0.0) -> str:
    """``"train"``, ``"validation"`` or ``"test"`` for the group named ``group_key``."""
    for prefix, split in _NAMED.items():
        if group_key.startswith(prefix):
            return split
    value = split_value(group_key)
    if value < test_fraction:
        return "test"
    return "validation" if value < test_fraction + validation_fraction else "train"


def is_heldout(group_key: str, fraction: float) -> bool:
    """Whether the group named ``group_key`` belongs to the test (held-out) set."""
    return split_of(group_key, fraction) == "test"


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from names and numbers, the same in every process and run."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
