"""What the suite may skip, and that CI fails any other skip.

A declared dependency (pyproject.toml: the runtime's and the `test` extra's, which the README's
test command installs) or the repository's own code is imported, never ``importorskip``-ed: its
absence is a broken install, not a reason to test less. Tests that run dicom3tools' validators
carry the ``dicom3tools`` marker (tests/conftest.py: they fail with the install hint) instead of
skipping when the tools are missing. In CI only GPU-only and non-image sweep skips remain."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
IMPORTORSKIP = re.compile(r"importorskip\(\s*[\"']([\w.]+)[\"']")
VALIDATOR_USE = re.compile(r"[\"'](dciodvfy|dcentvfy)[\"']|\bnew_errors\(|\bdciodvfy_errors\(")
VALIDATOR_SKIP = re.compile(r"which\(\s*[\"'](dciodvfy|dcentvfy)[\"']\s*\)")


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement (``PyWavelets>=1.5`` -> ``pywavelets``)."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared_distributions(extra: str = "test") -> set[str]:
    """The runtime's dependencies plus ``extra`` and every medclear extra it pulls in."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras, names, pending = project["optional-dependencies"], {_name(r) for r in project["dependencies"]}, [extra]
    while pending:
        for requirement in extras[pending.pop()]:
            nested = re.fullmatch(r"medclear\[(\w+)\]", requirement.strip())
            if nested:
                pending.append(nested.group(1))
            else:
                names.add(_name(requirement))
    return names


def _test_files() -> list[Path]:
    return sorted(path for path in TESTS.glob("test_*.py") if path.name != Path(__file__).name)


def test_declared_dependencies_and_own_code_are_imported_not_skipped():
    declared = declared_distributions()
    distributions = importlib.metadata.packages_distributions()

    def must_import(module: str) -> bool:
        top = module.split(".")[0]
        own = (REPO / top).is_dir() or (TESTS / top).is_dir() or (TESTS / f"{top}.py").is_file()
        return own or any(_name(d) in declared for d in distributions.get(top, []))

    offenders = [f"{path.name}: importorskip({module!r})" for path in _test_files()
                 for module in IMPORTORSKIP.findall(path.read_text()) if must_import(module)]
    assert not offenders, f"import these (declared in pyproject.toml or part of the repository): {offenders}"


def test_validator_tests_carry_the_dicom3tools_marker_instead_of_skipping():
    offenders = []
    for path in _test_files():
        text = path.read_text()
        if VALIDATOR_USE.search(text) and ("pytest.mark.dicom3tools" not in text or VALIDATOR_SKIP.search(text)):
            offenders.append(path.name)
    assert not offenders, f"mark these @pytest.mark.dicom3tools and drop their skipif on shutil.which: {offenders}"


def test_declared_distributions_follow_the_extras():
    declared = declared_distributions()
    assert {"pydicom", "onnxruntime", "torch", "onnx", "pydicom-data", "pywavelets", "scipy", "pytest"} <= declared
    assert "piq" not in declared  # installed beside the extras with --no-deps (README)


PROBE = '''
import pytest

def test_unexpected_skip():
    pytest.skip("some optional package is missing")

def test_sweep_skip():
    pytest.skip("not enhanced: skipped x.dcm: no pixel data")

def test_gpu_skip():
    pytest.skip("no NVIDIA GPU on this machine")

@pytest.mark.xfail(reason="a known gap", strict=False)
def test_expected_failure():
    assert False
'''


def _outcomes(folder: Path, ci: str) -> dict[str, str]:
    """Run the probe tests with tests/conftest.py as a plugin; each test's outcome (junit XML)."""
    report = folder / f"report{ci}.xml"
    env = {**os.environ, "MEDCLEAR_CI": ci, "CI": "", "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                    f"--junit-xml={report}", "test_probe.py"], cwd=folder, env=env, capture_output=True, timeout=120)
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    return outcomes


def test_ci_fails_every_skip_but_gpu_only_and_sweep_ones(tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    elsewhere = {"test_unexpected_skip": "skipped", "test_sweep_skip": "skipped", "test_gpu_skip": "skipped",
                 "test_expected_failure": "skipped"}  # junit reports an xfail as skipped
    assert _outcomes(tmp_path, "0") == elsewhere
    assert _outcomes(tmp_path, "1") == {**elsewhere, "test_unexpected_skip": "failure"}
