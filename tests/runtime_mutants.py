"""Seeded mutants of real DICOM files: header byte flips, truncations, VR and length corruptions.

Used by the CLI fuzz test (tests/test_runtime_fuzz.py). A mutant is a pure function of the
source bytes and a seed, so a failing mutant can be rebuilt from its file name alone.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREAMBLE = 132  # 128-byte preamble + "DICM"
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
KINDS = ("flip", "truncate", "vr", "length")
# Lengths that trip parsers: zero, odd, one short, huge, undefined, past the end.
ODD_LENGTHS = (0, 1, 3, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF)


@dataclass(frozen=True)
class ElementHeader:
    """Where one element's VR and length sit in a file (``vr_at`` None for implicit VR)."""

    tag: int
    start: int
    vr_at: int | None
    length_at: int
    length_size: int
    little_endian: bool


def _meta_headers(data: bytes) -> list[ElementHeader]:
    """File meta elements (always explicit VR little endian), from offset 132."""
    headers, position = [], PREAMBLE
    while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
        group, element = struct.unpack_from("<HH", data, position)
        tag, vr = group << 16 | element, data[position + 4 : position + 6]
        if vr in LONG_VRS:
            (length,) = struct.unpack_from("<I", data, position + 8)
            headers.append(ElementHeader(tag, position, position + 4, position + 8, 4, True))
            position += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            headers.append(ElementHeader(tag, position, position + 4, position + 6, 2, True))
            position += 8 + length
    return headers


def _dataset_headers(data: bytes) -> list[ElementHeader]:
    """Top-level dataset elements, located through pydicom's raw elements."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
    headers = []
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if raw is None or not hasattr(raw, "value_tell"):
            continue
        little = raw.is_little_endian
        if raw.is_implicit_VR:
            start = raw.value_tell - 8
            headers.append(ElementHeader(tag, start, None, start + 4, 4, little))
        elif raw.VR.encode() in LONG_VRS:
            start = raw.value_tell - 12
            headers.append(ElementHeader(tag, start, start + 4, start + 8, 4, little))
        else:
            start = raw.value_tell - 8
            headers.append(ElementHeader(tag, start, start + 4, start + 6, 2, little))
    return headers


def element_headers(data: bytes) -> list[ElementHeader]:
    """File meta and top-level dataset element headers of a DICOM file's bytes."""
    return _meta_headers(data) + _dataset_headers(data)


def set_vr(data: bytes, tag: int, vr: bytes) -> bytes:
    """``data`` with the VR of top-level element ``tag`` replaced by ``vr`` (explicit VR only)."""
    header = next(h for h in element_headers(data) if h.tag == tag)
    out = bytearray(data)
    out[header.vr_at : header.vr_at + 2] = vr
    return bytes(out)


def _pixel_start(data: bytes, headers: list[ElementHeader]) -> int:
    """Where the header ends: the start of the last element (Pixel Data in an image)."""
    return headers[-1].start if headers else len(data)


def mutate(data: bytes, headers: list[ElementHeader], kind: str, rng: np.random.Generator) -> bytes:
    """One mutant of ``data`` of the given kind."""
    out = bytearray(data)
    if kind == "truncate":
        return bytes(out[: int(rng.integers(0, len(data)))])
    if kind == "flip":
        end = max(_pixel_start(data, headers), PREAMBLE + 1)
        for _ in range(int(rng.integers(1, 4))):
            position = int(rng.integers(PREAMBLE - 4, end))
            out[position] ^= int(rng.integers(1, 256))
        return bytes(out)
    candidates = [h for h in headers if kind == "length" or h.vr_at is not None]
    header = candidates[int(rng.integers(len(candidates)))]
    if kind == "vr":
        choices = [b"XY", b"\x00\x01", b"SQ", b"UN", b"OB", b"US", b"DS", b"zz", b"AT"]
        out[header.vr_at : header.vr_at + 2] = choices[int(rng.integers(len(choices)))]
        return bytes(out)
    length = ODD_LENGTHS[int(rng.integers(len(ODD_LENGTHS)))]
    if header.length_size == 2:
        length &= 0xFFFF
    fmt = ("<" if header.little_endian else ">") + ("H" if header.length_size == 2 else "I")
    struct.pack_into(fmt, out, header.length_at, length)
    return bytes(out)


def write_mutants(source: Path, folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` mutants of ``source`` into ``folder`` (kinds in turn); return their paths."""
    data = source.read_bytes()
    headers = element_headers(data)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        path = folder / f"{source.stem}.{kind}.{seed}-{index:03d}.dcm"
        path.write_bytes(mutate(data, headers, kind, rng))
        paths.append(path)
    return paths
