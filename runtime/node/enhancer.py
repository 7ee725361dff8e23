"""The model in a child process, so that enhancing never holds the receiving threads' GIL.

The node spawns one child (``multiprocessing``, spawn) that opens the backend once and then
enhances one spooled instance per request with the CLI's own per-file code
(``runtime.enhance.enhance_file``), writing the derived file itself; the node's worker thread
only waits for the answer (a pipe read, which releases the GIL). The child runs at a lower CPU
priority (``worker_nice``) with all its inference threads, ignores SIGTERM and SIGINT (the node
drains, then tells it to stop), and dies with the node (Linux: PR_SET_PDEATHSIG; elsewhere it
exits at its next read of the closed pipe). Unless ``--threads`` says otherwise, ONNX Runtime
gets all CPUs but one: receiving keeps a core (on two cores, one inference thread, which also
means no idle pool threads spinning for work). Without a ``model`` setting (and without
``$MEDCLEAR_MODEL``) each instance goes to its modality's model as ``runtime.enhance`` routes
files (``runtime/routing.py``): MR to the MR denoiser where installed, the rest to the default
model; the default opens at start, a modality's own model on its first instance.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import warnings
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.logtext import cause
from runtime.model_location import is_model_url

if TYPE_CHECKING:  # the node itself does not import the runtime's inference modules
    from runtime.backends import Backend
    from runtime.derived import Derivation
    from runtime.enhance import Settings

START_TIMEOUT_S = 600.0  # opening a model (a TensorRT engine on a Jetson) can take minutes
PR_SET_PDEATHSIG = 1


class EnhancerError(RuntimeError):
    """The child could not open the model, or ended; one line."""


@dataclass(frozen=True)
class Result:
    """What became of one instance: a derived file, or a problem."""

    output: str | None = None  # the derived file, written and fsynced
    facts: str = ""  # noise level and strength, for the log
    problem: str | None = None  # why it was not enhanced
    unsupported: bool = False  # not an image the model covers (SR, colour, modality)
    broken: str | None = None  # the backend no longer runs a plain input: why (the file stays)


@dataclass(frozen=True)
class ModelSettings:
    """What the child needs to open the model (sent to it pickled)."""

    model: str | Path | None  # None: each modality's model (runtime/routing.py) unless $MEDCLEAR_MODEL names one
    backend: str
    threads: int | None
    strength: float
    nice: int
    modality_models: tuple[tuple[str, str | Path], ...] = ()  # (MODALITY, model) beside ``model``


class Enhancer:
    """One child process holding the model; ``enhance`` one instance at a time."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.process: multiprocessing.process.BaseProcess | None = None
        self.connection: Connection | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self) -> str:
        """Spawn the child and open the model; its description, or EnhancerError."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, self.settings, os.getpid()),
                                       name="medclear-model", daemon=True)
        self.process.start()
        theirs.close()
        self.connection = ours
        if not ours.poll(START_TIMEOUT_S):
            self.close()
            raise EnhancerError(f"the model did not open within {START_TIMEOUT_S:.0f} s")
        try:
            kind, text = ours.recv()
        except EOFError:
            code = self._end()
            raise EnhancerError(f"the model process ended while opening the model (exit code {code})") from None
        if kind != "ok":
            self._end()
            raise EnhancerError(text)
        return text

    def enhance(self, path: Path, outdir: Path) -> Result:
        """Enhance ``path`` into ``outdir``; if the child dies meanwhile, a Result saying so."""
        try:
            self.connection.send((str(path), str(outdir)))
            return self.connection.recv()
        except (EOFError, OSError):
            code = self._end()
            return Result(problem=f"the model process ended while enhancing it (exit code {code})")

    def close(self) -> None:
        """Ask the child to stop after the instance in hand; kill it if it does not."""
        if self.connection is not None:
            try:
                self.connection.send(None)
            except OSError:
                pass
        self._end(timeout=30.0)

    def _end(self, timeout: float = 5.0) -> int | None:
        process, self.process = self.process, None
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if process is None:
            return None
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
        return process.exitcode


# --- the child ---------------------------------------------------------------------------------


def _serve(connection: Connection, settings: ModelSettings, parent: int) -> None:
    """The child's loop: open the model, then enhance what the parent sends until None or EOF."""
    _follow_parent(parent)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")  # pydicom's warnings can quote element values
    if settings.nice > 0:
        try:
            os.nice(settings.nice)
        except OSError:
            pass
    from runtime.backends import BackendError

    try:
        model = _Model(settings)
    except BackendError as error:
        connection.send(("error", cause(error, 1000)))
        return
    connection.send(("ok", model.description))
    try:
        while True:
            try:
                request = connection.recv()
            except EOFError:
                break
            if request is None:
                break
            connection.send(model.enhance(Path(request[0]), Path(request[1])))
    finally:
        model.close()


def _follow_parent(parent: int) -> None:
    """Die with the node (Linux), and exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


def default_threads() -> int:
    """All usable CPUs but one, at least one."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - 1)


@dataclass(frozen=True)
class _Opened:
    """One opened backend and what enhancing a file with it needs."""

    backend: Backend
    settings: Settings  # its tile plan; outdir set per request
    derivation: Derivation


class _Model:
    """The opened backends and what enhancing a file with each needs. One model serves every
    file, unless the settings name none and ``$MEDCLEAR_MODEL`` is unset: then each file goes to
    its modality's model (``runtime.routing.modality_groups``, the CLI's rule), the default model opened at start
    and a modality's own model (MR's denoiser) on its first file. A model that cannot be opened
    then fails the files it would serve, with the reason, until the child is started again."""

    def __init__(self, settings: ModelSettings) -> None:
        from runtime.backends.select import DEFAULT_TASK
        from runtime.enhance import bounded_threads
        from runtime.routing import routed_model, routes_by_modality

        self.options = settings
        self.threads = bounded_threads(settings.threads) or default_threads()
        self.routed = routes_by_modality(DEFAULT_TASK, settings.model, remote=False)
        self.default = routed_model(None) if self.routed else settings.model
        self.opened: dict[str | Path | None, _Opened] = {}
        self.unopened: dict[str | Path, str] = {}  # a modality's model that could not be opened: why
        default = self._open(self.default)
        self.description = f"{default.backend.contract.model_name}, {default.backend.describe()}{self._own_models()}"

    def _open(self, model: str | Path | None) -> _Opened:
        """Open ``model`` (None: the default model) once; BackendError if it cannot be."""
        from runtime.enhance import Settings, derivation_for
        from runtime.pipeline import open_model, tile_plan

        if model not in self.opened:
            backend = open_model(model, self.options.backend, threads=self.threads)
            settings = Settings(outdir=Path(), overwrite=True, strength=self.options.strength, plan=tile_plan(backend))
            self.opened[model] = _Opened(backend, settings, derivation_for(backend))
        return self.opened[model]

    def _own_models(self) -> str:
        """For the start line of a routed child: which modalities have a model of their own."""
        from runtime.backends.select import DEFAULT_TASK, MODALITY_MODELS, modality_model

        own = {modality: str(model) if is_model_url(model) else Path(str(model)).name
               for modality, model in self.options.modality_models}
        if self.routed:
            own = {**{modality: path.name for modality in MODALITY_MODELS.get(DEFAULT_TASK, {})
                      if (path := modality_model(modality)) is not None}, **own}
        listed = [f"{modality} files to {name}" for modality, name in own.items()]
        return f"; {', '.join(listed)} (opened on the first)" if listed else ""

    def _for(self, path: Path) -> _Opened | str:
        """The opened model for ``path`` (its modality's, when routed), or why it cannot be had."""
        from runtime.inputs import Job
        from runtime.routing import modality_groups

        if not self.routed and not self.options.modality_models:
            return self.opened[self.default]
        try:  # the CLI's own rule (runtime/routing.py), for this one file
            ((model, _),) = modality_groups([Job(path, Path(path.stem))], routed=self.routed, model=self.default,
                                            overrides=dict(self.options.modality_models))
        except Exception as error:  # ModelNotFoundError: the default model is gone
            return f"no model for its modality: {cause(error, 500)}"
        if model not in self.unopened:
            try:
                return self._open(model)
            except Exception as error:  # a broken file, a TensorRT engine built elsewhere: this modality only
                name = Path(str(model)).name
                self.unopened[model] = f"its modality's model {name} could not be opened: {cause(error, 500)}"
        return self.unopened[model]

    def enhance(self, path: Path, outdir: Path) -> Result:
        from runtime.dicom_io import Skipped
        from runtime.enhance import (
            BackendUnusable, InferenceError, check_backend, enhance_file, failure_cause, file_facts,
        )
        from runtime.inputs import Job
        from runtime.pixels import UnsupportedImageError

        model = self._for(path)
        if isinstance(model, str):
            return Result(problem=model)
        settings = replace(model.settings, outdir=outdir)
        try:
            outcome = enhance_file(Job(path, Path(path.stem)), model.backend, settings, model.derivation)
        except (Skipped, UnsupportedImageError) as error:  # SR, RT, colour, modality not covered
            return Result(problem=cause(error), unsupported=True)
        except Exception as error:  # corrupt image, inference failure, disk full: this file only
            if isinstance(error, InferenceError):
                try:
                    check_backend(model.backend, model.settings.plan, error)
                except BackendUnusable as unusable:
                    return Result(problem=failure_cause(error), broken=cause(unusable, 500))
            return Result(problem=failure_cause(error))
        return Result(output=str(outcome.job.output(outdir, "dicom")),
                      facts=file_facts(outcome.noise, settings.strength))

    def close(self) -> None:
        """Close every opened backend."""
        for opened in self.opened.values():
            opened.backend.close()
        self.opened.clear()
