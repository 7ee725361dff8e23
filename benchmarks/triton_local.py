"""A real Triton Inference Server on this machine's loopback, for tests and the load benchmark.

The server is the ``tritonserver`` binary (Triton 2.51, CPU, Python backend) that the
nvidia-pytriton wheel ships. The wheel is *unpacked*, not installed: it pins numpy < 2,
which this project's environment does not take, and only its server, backends and
Python-backend stubs are needed. Models on it run in this interpreter's environment (the
stub imports numpy, onnxruntime and medclear from the venv whose ``bin`` is first on PATH).

    python -m benchmarks.triton_local fetch            # download + unpack (CI: .ci/run does)
    python -m benchmarks.triton_local serve REPO       # serve a model repository until Ctrl-C

Tests never download: they fail in CI without the unpacked server and skip elsewhere, naming
the fetch command. Standard library only, so the system Python can fetch before a venv exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from compiler.api_wheels import cached_wheel, download
from runtime.signals import sigterm_as_interrupt

SERVER_WHEEL = "nvidia-pytriton==0.7.0"  # Triton 2.51 (r24.10)
DEFAULT_HOME = Path(os.environ.get("MEDCLEAR_TRITON_HOME", Path.home() / ".cache" / "medclear" / "triton-server"))
FETCH_COMMAND = "python -m benchmarks.triton_local fetch"
_MEMBERS = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")
SHM_PREFIX = "/dev/shm/triton_python_backend_shm_region_"


class ServerError(RuntimeError):
    """The local server is missing, did not start, or stopped."""


def unpacked(home: Path = DEFAULT_HOME) -> Path | None:
    """The unpacked wheel's root (holding ``pytriton/tritonserver``), or None."""
    root = home / SERVER_WHEEL.replace("==", "-")
    return root if (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file() else None


def unpack(wheel: Path, home: Path = DEFAULT_HOME) -> Path:
    """Extract the server, its backends, stubs and bundled libraries from ``wheel``."""
    root = home / SERVER_WHEEL.replace("==", "-")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if member.filename.startswith(_MEMBERS):
                archive.extract(member, partial)
                mode = member.external_attr >> 16
                if mode & 0o111 or "/bin/" in member.filename or member.filename.endswith("_stub"):
                    os.chmod(partial / member.filename, 0o755)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


def fetch(home: Path = DEFAULT_HOME) -> Path | None:
    """Download (``pip download --no-deps``) and unpack the server wheel once; its root, or None."""
    if unpacked(home) is not None:
        return unpacked(home)
    wheel = cached_wheel(SERVER_WHEEL, home) or download(SERVER_WHEEL, home)
    return unpack(wheel, home) if wheel is not None else None


def missing_message(home: Path = DEFAULT_HOME) -> str:
    """Why a test cannot start the server, and how to fix it."""
    return (f"the Triton server ({SERVER_WHEEL}) is not unpacked in {home}: run `{FETCH_COMMAND}` "
            "(needs the package registry; .ci/run does)")


def backend_directory(root: Path) -> Path:
    """A backends folder whose Python backend has the stub for this interpreter's version.

    It sits beside the wheel's own ``backends`` so the libraries' relative RPATHs still resolve.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    server = root / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the Triton wheel has no Python-backend stub for Python {version}")
    target = server / f"backends_py{version.replace('.', '')}"
    python = target / "python"
    if not (python / stub.name).is_file():
        python.mkdir(parents=True, exist_ok=True)
        for item in (server / "backends" / "python").iterdir():
            shutil.copy2(item, python / item.name)
        shutil.copy2(stub, python / stub.name)
        os.chmod(python / stub.name, 0o755)
    return target


def server_environment(root: Path) -> dict[str, str]:
    """PATH with this venv's bin first (the stub's Python), LD_LIBRARY_PATH with libpython and
    the wheel's libraries (the stub links the system libpython of this interpreter's version)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libraries = [sysconfig.get_config_var("LIBDIR") or "", str(root / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libraries if p] + [env.get("LD_LIBRARY_PATH", "")])
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalTriton:
    """``tritonserver`` on 127.0.0.1 with free ports; a context manager that waits for ready
    and, on exit, stops the server and removes the shared-memory files it left."""

    repository: Path
    root: Path | None = None
    startup_s: float = 60.0
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    _shm_files: set = field(default_factory=set)
    _own_log: bool = False

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        """The tritonserver command line."""
        server = self.root / "pytriton" / "tritonserver"
        return [
            str(server / "bin" / "tritonserver"), "--model-repository", str(Path(self.repository).resolve()),
            "--backend-directory", str(backend_directory(self.root)),
            "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--exit-timeout-secs", "2", "--log-verbose", "0",
        ]

    def start(self) -> "LocalTriton":
        """Start the server and wait until /v2/health/ready answers 200; ServerError otherwise."""
        self.root = self.root or unpacked()
        if self.root is None:
            raise ServerError(missing_message())
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log_path, self._own_log = Path(name), True
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=server_environment(self.root), start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"tritonserver exited with {self.process.returncode}")
            if self.ready():
                self._shm_files |= shm_regions(self.process.pid)
                return self
            time.sleep(0.1)
        self._fail(f"tritonserver not ready after {self.startup_s:g} s")

    def _fail(self, problem: str) -> NoReturn:
        """Stop what started and raise ServerError with the end of the server's log."""
        tail = self.log_tail()
        self.stop()
        raise ServerError(f"{problem}: {tail}")

    def ready(self) -> bool:
        """True when the server's HTTP readiness endpoint answers 200."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log, one string."""
        text = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.is_file() else ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL if ``kill`` or after 10 s) the server and its stubs; remove the
        Python backend's shared-memory files it mapped (a killed server leaves them behind)."""
        if self.process is not None and self.process.poll() is None:
            self._shm_files |= shm_regions(self.process.pid)
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _kill_group(self.process)
        for leftover in self._shm_files:
            Path(leftover).unlink(missing_ok=True)
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "LocalTriton":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def shm_regions(pid: int) -> set[str]:
    """The Python backend's /dev/shm regions that process ``pid`` has mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {token for line in maps.splitlines() for token in line.split() if token.startswith(SHM_PREFIX)}


def _kill_group(process: subprocess.Popen | None) -> None:
    """Stubs that outlived their server (its own process group) are ended too."""
    if process is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    """``fetch`` the server, or ``serve REPO`` on loopback until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triton_local", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_parser = sub.add_parser("fetch", help="download and unpack the server wheel")
    fetch_parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    serve = sub.add_parser("serve", help="serve a model repository on 127.0.0.1")
    serve.add_argument("repository", type=Path)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        root = fetch(args.home)
        print(f"triton server: {root}" if root else f"error: could not fetch {SERVER_WHEEL} into {args.home}",
              file=sys.stdout if root else sys.stderr)
        return 0 if root else 1
    try:
        with sigterm_as_interrupt(), LocalTriton(args.repository) as server:  # SIGTERM stops the server too
            print(f"serving {args.repository}: gRPC {server.grpc_url}, HTTP {server.http_url}, "
                  f"metrics 127.0.0.1:{server.metrics_port} (Ctrl-C stops)", flush=True)
            code = server.process.wait()
            if code != 0:  # it died on its own: say so rather than end as if stopped
                server._fail(f"tritonserver exited with {code} while serving")
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
