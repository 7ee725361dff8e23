"""The Jetson scripts: shellcheck, --help, dry-run plans under faked JetPack/DLA detection, the
benchmark's restore-on-exit with stand-in Jetson tools, the systemd unit, and that every flag the
scripts pass to medclear's CLIs exists in those CLIs' --help."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from script_loader import shellcheck

REPO = Path(__file__).resolve().parent.parent
JETSON = REPO / "jetson"
SCRIPTS = ["setup.sh", "build_engines.sh", "benchmark.sh"]
FAKE_JP61 = {"MEDCLEAR_FAKE_L4T": "R36.4.0", "MEDCLEAR_FAKE_TRT": "10.3.0", "MEDCLEAR_FAKE_DLA": "0"}


def run_script(name: str, *args: str, env: dict | None = None, path_prefix: Path | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLEAR_")}
    full_env.update(env or {})
    if path_prefix is not None:
        full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(
        ["bash", str(JETSON / name), *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def plan(result: subprocess.CompletedProcess) -> list[list[str]]:
    """The PLAN lines of a dry run, each split into words."""
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[len("PLAN:") :]) for line in result.stdout.splitlines() if line.startswith("PLAN:")]


def flag_value(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


def module_calls(lines: list[list[str]], module: str, sub: str | None = None) -> list[list[str]]:
    out = []
    for words in lines:
        if "-m" in words and flag_value(words, "-m") == module:
            if sub is None or words[words.index("-m") + 2] == sub:
                out.append(words)
    return out


# --- static checks ---------------------------------------------------------------------


def test_scripts_are_shellcheck_clean():
    result = subprocess.run(
        [shellcheck(), "-x", *(s for s in SCRIPTS), "lib.sh"], cwd=JETSON, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_strict_and_executable(name):
    text = (JETSON / name).read_text()
    assert "set -euo pipefail" in text
    assert os.access(JETSON / name, os.X_OK), f"{name} is not executable"


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_zero_and_explains(name):
    result = run_script(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: jetson/{name}")
    assert "--dry-run" in result.stdout and "PLAN" in result.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_option_fails_with_message(name):
    result = run_script(name, "--no-such-option", "--dry-run")
    assert result.returncode != 0
    assert "unknown option '--no-such-option'" in result.stderr


def test_systemd_unit_verifies(tmp_path):
    unit = (JETSON / "medclear-enhance.service").read_text()
    assert "jetson/watch_folder.py" in unit and "[Install]" in unit
    if shutil.which("systemd-analyze") is None:
        import configparser

        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit)
        assert parser.has_option("Service", "ExecStart")
        return
    # verify checks that ExecStart's binary exists; point it at this interpreter.
    copy = tmp_path / "medclear-enhance.service"
    copy.write_text(unit.replace("/opt/medclear/.venv/bin/python", os.path.realpath(sys.executable)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_passes_only_flags_the_watcher_knows():
    unit = (JETSON / "medclear-enhance.service").read_text().replace("\\\n", " ")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    used = set(re.findall(r"(?<!\S)(--[a-z][a-z-]*)", exec_start))
    help_text = subprocess.run(
        [sys.executable, str(JETSON / "watch_folder.py"), "--help"], capture_output=True, text=True
    ).stdout
    assert used and all(flag in help_text for flag in used), used
    # every ${VAR} (and word-split $VAR) in ExecStart has a default in the unit and in the example env file
    env_file = (JETSON / "medclear-enhance.env").read_text()
    for var in re.findall(r"\$\{?(\w+)\}?", exec_start):
        assert f"Environment={var}=" in unit and f"\n{var}=" in env_file, var


# --- device detection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "l4t", "jetpack"),
    [
        ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: x", "R36.4.0", "6.1"),
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: x", "R36.4.3", "6.2"),
        ("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: x", "R36.3.0", "6.0"),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: x", "R35.4.1", "5.1.x"),
    ],
)
def test_l4t_release_file_is_parsed(tmp_path, line, l4t, jetpack):
    release = tmp_path / "nv_tegra_release"
    release.write_text(line + "\n# KERNEL_VARIANT: oot\n")
    script = f'source {shlex.quote(str(JETSON / "lib.sh"))}; l=$(detect_l4t); echo "$l|$(jetpack_for_l4t "$l")"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLEAR_")}
    env["MEDCLEAR_NV_TEGRA_RELEASE"] = str(release)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env).stdout.strip()
    assert out.split("|")[:2] == [l4t, jetpack]


# --- build_engines.sh ---------------------------------------------------------------------


def test_build_plan_on_jetpack61_without_dla(tmp_path):
    lines = plan(run_script("build_engines.sh", "--dry-run", "--out-dir", str(tmp_path), env=FAKE_JP61))
    builds = module_calls(lines, "compiler", "build")
    verifies = module_calls(lines, "compiler", "verify")
    assert [flag_value(b, "--precision") for b in builds] == ["fp16", "int8"]
    assert flag_value(builds[0], "--onnx").endswith("models/medclear_student.fp32.onnx")
    assert flag_value(builds[1], "--onnx").endswith("models/medclear_student.int8.onnx")
    caches = {flag_value(b, "--timing-cache") for b in builds}
    assert caches == {str(tmp_path / "medclear_student.trt10.3.0.timing.cache")}, "one persistent timing cache for all builds"
    assert all("--dla-core" not in b for b in builds)
    # each engine is verified against ONNX Runtime on the ONNX file it was built from
    assert [(flag_value(v, "--onnx"), flag_value(v, "--engine")) for v in verifies] == [
        (flag_value(b, "--onnx"), flag_value(b, "--out")) for b in builds
    ]
    for b in builds:
        assert (flag_value(b, "--min"), flag_value(b, "--max")) == ("1x1x256x256", "1x1x2048x2048")


def test_build_plan_adds_fixed_shape_dla_engine_where_dla_exists(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_DLA": "2"}
    lines = plan(
        run_script("build_engines.sh", "--dry-run", "--out-dir", str(tmp_path), "--dla-shape", "1x1x384x384", env=env)
    )
    builds = module_calls(lines, "compiler", "build")
    assert len(builds) == 3
    dla = builds[2]
    assert flag_value(dla, "--dla-core") == "0"
    assert flag_value(dla, "--min") == flag_value(dla, "--opt") == flag_value(dla, "--max") == "1x1x384x384"
    assert flag_value(dla, "--timing-cache") == str(tmp_path / "medclear_student.trt10.3.0.timing.cache")
    assert flag_value(dla, "--out") in {flag_value(v, "--engine") for v in module_calls(lines, "compiler", "verify")}

    no_dla = plan(run_script("build_engines.sh", "--dry-run", "--no-dla", "--out-dir", str(tmp_path), env=env))
    assert len(module_calls(no_dla, "compiler", "build")) == 2


def test_build_refuses_a_dla_core_the_module_lacks(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_DLA": "1"}
    result = run_script("build_engines.sh", "--dry-run", "--dla-core", "1", "--out-dir", str(tmp_path), env=env)
    assert result.returncode != 0 and "1 DLA core(s)" in result.stderr


def test_build_without_tensorrt_or_onnx_stops_with_advice(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_TRT": "none"}
    result = run_script("build_engines.sh", "--models", str(tmp_path), "--out-dir", str(tmp_path), env=env)
    assert result.returncode != 0 and "setup.sh" in result.stderr
    result = run_script("build_engines.sh", "--models", str(tmp_path), "--out-dir", str(tmp_path), env=FAKE_JP61)
    assert result.returncode != 0 and "medclear_student.fp32.onnx: not found" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing may be built or created after a failed check"


def test_build_stops_before_building_when_verify_cannot_run(tmp_path):
    for name in ("medclear_student.fp32.onnx", "medclear_student.int8.onnx"):
        (tmp_path / name).write_bytes(b"")
    out = tmp_path / "engines"
    args = ["--models", str(tmp_path), "--out-dir", str(out), "--python", "false"]
    result = run_script("build_engines.sh", *args, env=FAKE_JP61)
    assert result.returncode != 0 and "cannot import compiler.verify" in result.stderr and "--no-verify" in result.stderr
    assert not out.exists()


# --- setup.sh --------------------------------------------------------------------------


def test_setup_plan_makes_system_site_venv_and_never_installs_tensorrt_or_torch(tmp_path):
    venv = tmp_path / "venv"
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_TRT": "none", "MEDCLEAR_FAKE_CUDA_PY": "none",
           "MEDCLEAR_FAKE_PYTHON_VERSION": "3.10"}
    result = run_script("setup.sh", "--dry-run", "--with-compiler", "--venv", str(venv), env=env)
    lines = plan(result)
    assert ["-m", "venv", "--system-site-packages", str(venv)] == lines[0][1:]
    pip_lines = [w for w in lines if w[1:4] == ["-m", "pip", "install"]]
    assert all(w[0] == str(venv / "bin/python") for w in pip_lines)
    packages = [w for line in pip_lines for w in line[4:] if not w.startswith("-")]
    names = {re.split(r"[<>=!~ ]", p)[0].lower() for p in packages}
    assert not names & {"tensorrt", "torch", "nvidia-modelopt"}, names
    assert {"onnx", "polygraphy", "onnxslim"} <= names and "cuda-python==12.6.*" in packages
    assert any("--editable" in line and str(REPO) in line for line in pip_lines)
    assert all("--constraint" in line and str(JETSON / "constraints.txt") in line for line in pip_lines[1:])
    assert "python3-libnvinfer" in result.stderr and "missing" in result.stderr
    assert not venv.exists()


def test_setup_with_bench_adds_the_bench_extra_without_torch(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_CUDA_PY": "pycuda", "MEDCLEAR_FAKE_PYTHON_VERSION": "3.10"}
    lines = plan(run_script("setup.sh", "--dry-run", "--with-bench", "--venv", str(tmp_path / "v"), env=env))
    words = {w.split(">")[0] for line in lines for w in line}
    assert {"psutil", "onnx", "polygraphy"} <= words and not words & {"torch", "tensorrt"}


def test_setup_keeps_an_existing_cuda_binding(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_CUDA_PY": "pycuda", "MEDCLEAR_FAKE_PYTHON_VERSION": "3.10"}
    result = run_script("setup.sh", "--dry-run", "--venv", str(tmp_path / "v"), env=env)
    assert "cuda-python" not in result.stdout and "pycuda" not in result.stdout
    assert "CUDA Python binding: pycuda" in result.stderr


def test_setup_refuses_jetpack5_python38(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_L4T": "R35.4.1", "MEDCLEAR_FAKE_PYTHON_VERSION": "3.8"}
    result = run_script("setup.sh", "--venv", str(tmp_path / "v"), env=env)
    assert result.returncode != 0
    assert "Python >= 3.10" in result.stderr and "JetPack 5" in result.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this is a Jetson")
def test_setup_refuses_a_non_jetson(tmp_path):
    result = run_script("setup.sh", "--venv", str(tmp_path / "v"), env={"MEDCLEAR_NV_TEGRA_RELEASE": "/nonexistent"})
    assert result.returncode != 0 and "not a Jetson" in result.stderr
    assert not (tmp_path / "v").exists()


# --- benchmark.sh ------------------------------------------------------------------------


def test_benchmark_plan_stores_sets_and_restores(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_POWER_MODE": "2"}
    engine = tmp_path / "m.int8.engine"
    result = run_script(
        "benchmark.sh", "--dry-run", "--engine", str(engine), "--results", str(tmp_path / "r"),
        "--power-mode", "0", "--", "--iterations", "7", env=env,
    )
    lines = [[w for w in words if w != "sudo"] for words in plan(result)]
    text = [" ".join(words) for words in lines]
    clocks_file = str(tmp_path / "r" / "jetson_clocks.before.conf")

    def index(command: str) -> int:
        return text.index(command)

    bench = next(i for i, t in enumerate(text) if "-m benchmarks.latency" in t)
    assert index(f"jetson_clocks --store {clocks_file}") < index("nvpmodel -m 0") < index("jetson_clocks") < bench
    assert any(t.startswith("(background) tegrastats") for t in text[:bench])
    assert index("nvpmodel -m 2") > bench, "the original power mode comes back after the run"
    assert index(f"jetson_clocks --restore {clocks_file}") > bench
    call = lines[bench]
    assert call[call.index("benchmarks.latency") + 1] == str(engine) and call[-2:] == ["--iterations", "7"]
    assert flag_value(call, "--out") == str(tmp_path / "r" / "latency-m.int8.json")
    assert not (tmp_path / "r").exists()


def test_benchmark_fits_sizes_to_each_engines_profile(tmp_path):
    """A fixed-shape DLA engine is timed at its one shape; a dynamic one at the sizes it accepts."""
    engines = {"dyn.engine": ([1, 1, 256, 256], [1, 1, 512, 512], [1, 1, 768, 768]),
               "dla0.engine": ([1, 1, 384, 384], [1, 1, 384, 384], [1, 1, 384, 384])}
    for name, (lo, opt, hi) in engines.items():
        (tmp_path / name).write_bytes(b"")
        (tmp_path / f"{name}.json").write_text(json.dumps({"profile": {"min": lo, "opt": opt, "max": hi}}))
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_POWER_MODE": "0"}
    result = run_script("benchmark.sh", "--dry-run", "--engines-dir", str(tmp_path), "--results",
                        str(tmp_path / "r"), "--sizes", "256,512,1024", "--batches", "1,2", env=env)
    calls = {Path(c[c.index("benchmarks.latency") + 1]).name: c for c in module_calls(plan(result), "benchmarks.latency")}
    assert (flag_value(calls["dyn.engine"], "--sizes"), flag_value(calls["dyn.engine"], "--batches")) == ("256,512", "1")
    assert (flag_value(calls["dla0.engine"], "--sizes"), flag_value(calls["dla0.engine"], "--batches")) == ("384", "1")


def test_benchmark_plan_changes_nothing_it_need_not(tmp_path):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_POWER_MODE": "0"}
    args = ["--dry-run", "--engine", str(tmp_path / "e.engine"), "--results", str(tmp_path / "r")]
    text = " ".join(" ".join(w) for w in plan(run_script("benchmark.sh", *args, env=env)))
    assert "nvpmodel -m" not in text, "already in mode 0: no change, nothing to restore"
    text = " ".join(" ".join(w) for w in plan(run_script("benchmark.sh", *args, "--no-clocks", env=env)))
    assert "jetson_clocks" not in text


def _fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_benchmark_restores_settings_when_the_run_fails(tmp_path):
    """Real (not dry) run with stand-in Jetson tools: a failing benchmark still restores."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    record = f'echo "$(basename "$0") $*" >> {shlex.quote(str(calls))}\n'
    _fake_tool(bin_dir, "sudo", 'if [[ "$1" == -v ]]; then exit 0; fi\nexec "$@"\n')
    _fake_tool(bin_dir, "nvpmodel", record + 'if [[ "$1" == -q ]]; then printf "NV Power Mode: 15W\\n2\\n"; fi\n')
    _fake_tool(bin_dir, "jetson_clocks", record)
    _fake_tool(bin_dir, "tegrastats", record + "trap 'exit 0' TERM\nwhile true; do sleep 0.1; done\n")
    _fake_tool(bin_dir, "fake-python", 'if [[ "$1" == -c ]]; then exit 0; fi\n' + record + "sleep 0.3\nexit 3\n")
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"x")
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_MODEL": "test board"}
    result = run_script(
        "benchmark.sh", "--engine", str(engine), "--results", str(tmp_path / "r"), "--power-mode", "0",
        "--python", str(bin_dir / "fake-python"), env=env, path_prefix=bin_dir,
    )
    assert result.returncode == 3, result.stderr
    lines = calls.read_text().splitlines()
    # tegrastats runs in the background, so its line may land anywhere; order the rest.
    assert any(line.startswith("tegrastats --interval 500 --logfile") for line in lines)
    log = [line for line in lines if not line.startswith("tegrastats")]
    clocks_file = str(tmp_path / "r" / "jetson_clocks.before.conf")
    bench = next(i for i, line in enumerate(log) if line.startswith("fake-python"))
    assert log.index(f"jetson_clocks --store {clocks_file}") < log.index("nvpmodel -m 0") < bench
    assert log[bench + 1 :] == ["nvpmodel -m 2", f"jetson_clocks --restore {clocks_file}"]
    environment = (tmp_path / "r" / "environment.txt").read_text()
    assert "board: test board" in environment and "power_mode_before: 2" in environment


# --- the CLIs the scripts call -------------------------------------------------------------


def _cli_help(*module_and_args: str) -> str:
    """``python -m MODULE [SUB] --help``; a CLI the scripts call must exist (a missing one fails)."""
    result = subprocess.run(
        [sys.executable, "-m", *module_and_args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"python -m {' '.join(module_and_args)} --help: {result.stderr}"
    return result.stdout


def _flags(words: list[str]) -> set[str]:
    return {w.split("=")[0] for w in words if re.fullmatch(r"--?[a-z][a-z0-9-]*(=.*)?", w)}


@pytest.mark.slow
@pytest.mark.parametrize("sub", ["build", "verify"])
def test_compiler_flags_used_exist(tmp_path, sub):
    env = {**FAKE_JP61, "MEDCLEAR_FAKE_DLA": "1"}
    args = ["--dry-run", "--out-dir", str(tmp_path), "--workspace-mib", "512", "--tolerance-db", "40"]
    calls = module_calls(plan(run_script("build_engines.sh", *args, env=env)), "compiler", sub)
    used = set().union(*(_flags(c[c.index(sub) + 1 :]) for c in calls))
    help_text = _cli_help("compiler", sub)
    assert used and {f for f in used if f not in help_text} == set()


@pytest.mark.slow
def test_runtime_enhance_flags_used_exist(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.dcm").write_bytes(b"")
    out = subprocess.run(
        [sys.executable, str(JETSON / "watch_folder.py"), "--input", str(inbox), "--output", str(tmp_path / "o"),
         "--model", "m.engine", "--backend", "tensorrt", "--format", "dicom", "--dry-run"],
        capture_output=True, text=True, check=True,
    ).stdout
    command = shlex.split(next(line for line in out.splitlines() if "runtime.enhance" in line)[len("PLAN:") :])
    used = _flags(command[command.index("runtime.enhance") + 1 :])
    help_text = _cli_help("runtime.enhance")
    assert {"-o", "--model", "--backend", "--format", "--overwrite"} <= used
    assert {f for f in used if f not in help_text} == set()


@pytest.mark.slow
def test_benchmarks_latency_flags_used_exist(tmp_path):
    result = run_script(
        "benchmark.sh", "--dry-run", "--engine", str(tmp_path / "e.engine"), "--results", str(tmp_path / "r"),
        env={**FAKE_JP61, "MEDCLEAR_FAKE_POWER_MODE": "0"},
    )
    calls = module_calls(plan(result), "benchmarks.latency")
    used = _flags(calls[0][calls[0].index("benchmarks.latency") + 1 :])
    help_text = _cli_help("benchmarks.latency")
    assert used and {f for f in used if f not in help_text} == set()


# A Jetson has no torch (jetson/setup.sh never installs it): run a module with `import torch` failing.
WITHOUT_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def _run_without_torch(module: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, module, *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"python -m {module} without torch:\n{result.stderr[-2000:]}"
    return result


@pytest.mark.slow
def test_verify_and_latency_run_without_torch(tmp_path):
    """What build_engines.sh and benchmark.sh run besides the build (`compiler verify` on real
    frames, `benchmarks.latency`) works where `import torch` fails, as on a Jetson."""
    int8, fp32 = (str(REPO / "models" / f"medclear_student.{p}.onnx") for p in ("int8", "fp32"))
    assert "PASS" in _run_without_torch("compiler", "verify", "--onnx", int8, "--reference", fp32).stdout
    out = tmp_path / "latency.json"
    _run_without_torch("benchmarks.latency", int8, "--sizes", "64", "--batches", "1", "--budget-s", "0.05",
                       "--warmup", "0", "--min-runs", "1", "--ceiling-s", "0.05", "--no-dicom", "--no-process",
                       "--out", str(out))
    assert [row["size"] for row in json.loads(out.read_text())["latency"]] == [64]
