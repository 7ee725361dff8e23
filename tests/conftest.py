"""Shared pytest configuration: what may skip, what must fail instead, and CI's check of both.

- GPU tests (marker ``gpu``) skip with a reason where no GPU/TensorRT is present.
- Tests that run dicom3tools' validators (marker ``dicom3tools``) fail where ``dciodvfy`` or
  ``dcentvfy`` is missing, naming the install command; ``-m "not dicom3tools"`` deselects them.
- Browser tests (marker ``chromium``) fail where Debian's ``chromium`` or ``chromedriver`` is
  missing, naming the install command; ``-m "not chromium"`` deselects them.
- In CI (``CI`` or ``MEDCLEAR_CI`` set, as ``.ci/run`` does) a skip whose reason is not one of
  ``EXPECTED_SKIPS`` (GPU-only tests, the sweep's non-image files) is reported as a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pytest

from compiler.api_wheels import in_ci

DICOM3TOOLS = ("dciodvfy", "dcentvfy")
DICOM3TOOLS_HINT = (
    "install Debian's dicom3tools (apt-get install dicom3tools; .ci/run does), "
    "or deselect these tests with -m 'not dicom3tools'"
)
CHROMIUM = ("chromium", "chromedriver")
CHROMIUM_HINT = (
    "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does), "
    "or deselect these tests with -m 'not chromium'"
)

# The only skips CI accepts. A new reason belongs here only if no CI machine can run the test.
EXPECTED_SKIPS = re.compile(
    "|".join(
        (
            r"TensorRT is not installed",  # GPU-only tests on a CPU machine
            r"no NVIDIA GPU on this machine",
            r"needs an NVIDIA GPU",
            r"TensorRT is installed",  # "fails cleanly without TensorRT" tests on a GPU machine
            r"an NVIDIA driver is present",
            r"this is a Jetson",
            r"not enhanced: ",  # the runtime sweep's packaged files that are no greyscale image
            r"a DICOMDIR given as input",
        )
    )
)


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (GPU/Jetson only; see docs/COMPILER.md)"
    if shutil.which("nvidia-smi") is None and not _is_jetson():
        return "no NVIDIA GPU on this machine"
    return None


def _is_jetson() -> bool:
    return os.path.exists("/etc/nv_tegra_release")


def missing_dicom3tools() -> list[str]:
    """The dicom3tools validators not found on PATH."""
    return [tool for tool in DICOM3TOOLS if shutil.which(tool) is None]


def missing_chromium() -> list[str]:
    """The headless browser and its WebDriver not found on PATH."""
    return [tool for tool in CHROMIUM if shutil.which(tool) is None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "api_wheels: reads the pinned TensorRT/cuda-python bindings wheels (`python -m compiler.api_wheels fetch`); "
        "fails in CI without them, skips elsewhere",
    )
    config.addinivalue_line(
        "markers",
        f"dicom3tools: runs {' and '.join(DICOM3TOOLS)}; fails without them ({DICOM3TOOLS_HINT})",
    )
    config.addinivalue_line(
        "markers",
        f"chromium: drives {' and '.join(CHROMIUM)} (headless browser tests); fails without them ({CHROMIUM_HINT})",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("dicom3tools") is not None:
        missing = missing_dicom3tools()
        if missing:
            pytest.fail(f"{' and '.join(missing)} not found: {DICOM3TOOLS_HINT}", pytrace=False)
    if item.get_closest_marker("chromium") is not None:
        missing = missing_chromium()
        if missing:
            pytest.fail(f"{' and '.join(missing)} not found: {CHROMIUM_HINT}", pytrace=False)


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped report gives (pytest keeps it as (path, line, "Skipped: reason"))."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = skip_reason(report)
        if not EXPECTED_SKIPS.search(reason):
            report.outcome = "failed"
            report.longrepr = (
                f"skipped in CI: {reason}\nCI accepts only GPU-only and non-image sweep skips "
                "(tests/conftest.py EXPECTED_SKIPS); install what the test needs or make it fail with a hint"
            )
