#!/usr/bin/env python3
"""Print the pip requirements of a medclear extra that are safe to install on a Jetson.

pyproject.toml stays the one list of dependencies. On a Jetson, TensorRT (and torch, if
any) belong to JetPack or to NVIDIA's own wheels, so this drops them, the CUDA bindings
(installed separately to match JetPack's CUDA) and the extra's references to other medclear
extras (``compile`` pulls ``train``, i.e. torch, which the Jetson does not need: ONNX export
happens on a workstation). Runs on Python 3.8+ (JetPack's system Python).

Usage: python3 jetson/extras.py compile [--pyproject FILE]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import List

# Never pip-installed on a Jetson: JetPack (apt) or NVIDIA's Jetson wheels provide them.
JETPACK_OWNED = {"torch", "torchvision", "tensorrt", "nvidia-modelopt", "cuda-python", "pycuda"}


def _load_toml(path: Path) -> dict:
    """Parse a TOML file with tomllib (3.11+), tomli, or the copy pip vendors."""
    try:
        import tomllib as toml  # type: ignore[import-not-found]
    except ImportError:
        try:
            import tomli as toml  # type: ignore[import-not-found,no-redef]
        except ImportError:
            from pip._vendor import tomli as toml  # type: ignore[no-redef]
    with path.open("rb") as f:
        return toml.load(f)


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def jetson_requirements(pyproject: dict, extra: str) -> List[str]:
    """Requirements of EXTRA minus JetPack-owned packages and medclear self-references."""
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise ValueError(f"pyproject.toml has no extra {extra!r} (known: {', '.join(sorted(extras))})")
    own_name = requirement_name(project["name"])
    kept = []
    for requirement in extras[extra]:
        name = requirement_name(requirement)
        if name == own_name or name in JETPACK_OWNED:
            continue
        kept.append(requirement)
    return kept


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extra", help="name of the optional-dependencies table, e.g. compile")
    parser.add_argument(
        "--pyproject",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "pyproject.toml",
        help="pyproject.toml to read (default: the repository's)",
    )
    args = parser.parse_args(argv)
    try:
        requirements = jetson_requirements(_load_toml(args.pyproject), args.extra)
    except (OSError, KeyError, ValueError, ImportError) as exc:
        print(f"extras.py: {args.pyproject}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
