"""The fixed held-out rule: a stable hash of an image group's key.

A group is every copy of one image (the same slice stored in several transfer syntaxes,
lossless and lossy, or cropped) plus, for multi-frame files, all frames of the file. The
group is held out when the salted SHA-256 of its key falls below ``fraction``; the key is a
name, not decoded pixels, so a new decoder version or added files never move an image
between training and held-out. The salt was fixed once (docs/DATA.md).
"""

from __future__ import annotations

import hashlib

SPLIT_SALT = "medclear-heldout-v55"  # chosen once, see docs/DATA.md


def split_value(group_key: str) -> float:
    """A stable number in [0, 1) for ``group_key``."""
    digest = hashlib.sha256(f"{SPLIT_SALT}/{group_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(group_key: str, fraction: float) -> bool:
    """Whether the group named ``group_key`` belongs to the held-out set.

    Keys starting ``heldout:`` or ``train:`` (phantoms) are assigned by name; others by hash.
    """
    if group_key.startswith("heldout:"):
        return True
    if group_key.startswith("train:"):
        return False
    return split_value(group_key) < fraction


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from names and numbers, the same in every process and run."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
