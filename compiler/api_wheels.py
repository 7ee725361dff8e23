"""The pinned bindings wheels the static API checks read, and the step that fetches them.

TensorRT and a CUDA binding cannot run here, but their small Python bindings wheels name
every class, function and enum value they bind. The static checks (``compiler.trt_api_check``,
``compiler.cuda_api_check``) and the test fakes of TensorRT and cuda-python are checked against
these wheels, so they are test data: CI fetches them before the tests with

    python -m compiler.api_wheels fetch

(``.ci/run`` does), and the tests fail in CI, rather than skip, when one is missing. Tests never
download. Standard library only, so the system Python can run the step before a venv exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# TensorRT bindings on PyPI, one per API family the code supports, by TensorRT version.
TRT_BINDINGS_WHEELS = {
    "8.6.1": "tensorrt-bindings==8.6.1",
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106",
}
# cuda-python's runtime bindings (``cuda.bindings.runtime``), whose runtime.pyx names every call.
CUDA_BINDINGS_WHEEL = "cuda-bindings==12.9.0"
PINNED = (*TRT_BINDINGS_WHEELS.values(), CUDA_BINDINGS_WHEEL)
DEFAULT_CACHE = Path.home() / ".cache" / "medclear" / "trt-bindings"
FETCH_COMMAND = "python -m compiler.api_wheels fetch"
CI_VARIABLES = ("CI", "MEDCLEAR_CI")


def cached_wheel(requirement: str, cache_dir: Path = DEFAULT_CACHE) -> Path | None:
    """The wheel for a pinned ``name==version`` requirement in ``cache_dir``, or None."""
    name, version = requirement.split("==")
    found = sorted(cache_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    return found[0] if found else None


def download(requirement: str, cache_dir: Path = DEFAULT_CACHE, timeout: float = 600) -> Path | None:
    """``pip download --no-deps`` one requirement into ``cache_dir``; the wheel, or None on failure."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache_dir), requirement],
        check=False, timeout=timeout,
    )
    return cached_wheel(requirement, cache_dir)


def fetch(cache_dir: Path = DEFAULT_CACHE, requirements: tuple[str, ...] = PINNED) -> list[str]:
    """Make every pinned wheel present in ``cache_dir``; the requirements still missing."""
    return [r for r in requirements if cached_wheel(r, cache_dir) is None and download(r, cache_dir) is None]


def in_ci(environ: dict[str, str] | None = None) -> bool:
    """True where CI or MEDCLEAR_CI is set to something other than empty, 0 or false."""
    environ = os.environ if environ is None else environ
    return any(environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in CI_VARIABLES)


def missing_message(requirement: str, cache_dir: Path = DEFAULT_CACHE) -> str:
    """What a test says when a pinned wheel is absent: where it looked and how to fetch it."""
    return (
        f"{requirement} is not in {cache_dir}: run `{FETCH_COMMAND}` (needs the package registry; "
        "CI runs it in .ci/run), or deselect these tests with -m 'not api_wheels'"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m compiler.api_wheels fetch [--cache-dir DIR]``: exit 1 naming any wheel not fetched."""
    parser = argparse.ArgumentParser(prog="python -m compiler.api_wheels", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    missing = fetch(args.cache_dir)
    for requirement in missing:
        print(f"error: could not fetch {requirement} into {args.cache_dir}", file=sys.stderr)
    if not missing:
        print(f"api wheels: {len(PINNED)} pinned wheels in {args.cache_dir}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
