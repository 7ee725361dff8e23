"""Packaging: the default models ship inside the installed package (``medclear_models``), so a
``pip install .`` (not editable) finds them without a checkout and the README's main command
works from any directory."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from runtime.backends import select

REPO = Path(__file__).resolve().parents[1]
CODE = ("runtime", "trainer", "compiler", "benchmarks")


def _source_files() -> list[str]:
    """The files git would commit (tracked and new, not ignored), relative to the repository."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the source files")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    return [name for name in listed if (REPO / name).is_file()]


def test_every_package_folder_is_listed_and_models_are_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {str(Path(name).parent).replace("/", ".") for name in _source_files()
               if name.split("/")[0] in CODE and name.endswith((".py", ".json"))}
    assert set(config["packages"]) == folders | {"medclear_models"}
    assert config["package-dir"] == {"medclear_models": "models"}
    shipped = {*select.DEFAULT_MODELS, *select.SR2_MODELS,
               *(name for by_modality in select.MODALITY_MODELS.values() for names in by_modality.values() for name in names)}
    assert shipped <= set(config["package-data"]["medclear_models"])
    assert all((REPO / "models" / name).is_file() for name in shipped)


def test_a_checkout_uses_its_models_folder():
    assert select.installed_models_dir() == REPO / "models"


def test_without_a_checkout_the_installed_package_data_is_found(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "medclear_models").mkdir(parents=True)
    (site / "medclear_models" / select.DEFAULT_MODELS[0]).write_bytes(b"onnx")
    monkeypatch.setattr(select, "_SOURCE_ROOT", site)  # runtime/ inside site-packages: no pyproject.toml
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert select.installed_models_dir() == site / "medclear_models"
    monkeypatch.delenv(select.MODEL_ENV, raising=False)
    assert select.default_model(select.installed_models_dir()) == site / "medclear_models" / select.DEFAULT_MODELS[0]


def _source_copy(target: Path) -> Path:
    """What a checkout holds of the package (code, models, pyproject, README), copied to ``target``."""
    for name in _source_files():
        if name.split("/")[0] in (*CODE, "models") or name in ("pyproject.toml", "README.md"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


@pytest.mark.slow
def test_pip_install_dot_then_the_readme_command_from_another_directory(tmp_path):
    """`pip install .` into a fresh venv (dependencies borrowed from this one: nothing is
    downloaded), then `python -m runtime.enhance samples/ct_quarter_dose.dcm -o out --png-preview`
    in a directory that is not the checkout."""
    source = _source_copy(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("medclear-*.whl")
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "samples").mkdir(parents=True)
    shutil.copy(REPO / "samples" / "ct_quarter_dose.dcm", elsewhere / "samples")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", select.MODEL_ENV)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    where = run("-c", "import runtime.backends.select as s; print(s.__file__); print(s.default_model())")
    assert where.returncode == 0, where.stderr
    module, model = where.stdout.split()
    assert module.startswith(str(site)) and Path(model) == site / "medclear_models" / select.DEFAULT_MODELS[0]
    assert run("-m", "runtime.enhance", "--help").returncode == 0
    result = run("-m", "runtime.enhance", "samples/ct_quarter_dose.dcm", "-o", "out", "--png-preview", "-q")
    assert result.returncode == 0, result.stderr
    assert "1 done" in result.stdout
    assert (elsewhere / "out" / "ct_quarter_dose.enhanced.dcm").is_file()
    assert (elsewhere / "out" / "ct_quarter_dose.preview.png").is_file()
    script = subprocess.run([str(fresh / "bin" / "medclear-enhance"), "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert script.returncode == 0 and "--model" in script.stdout
