"""The project's shell scripts (scripts/*.sh) pass shellcheck, as jetson/'s do (tests/test_jetson.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from script_loader import shellcheck

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.sh"))


def test_scripts_are_shellcheck_clean():
    assert len(SCRIPTS) >= 5  # reproduce, ship, score, device_train, the x2 reproduce
    result = subprocess.run([shellcheck(), "-x", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
