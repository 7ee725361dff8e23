"""Enhancing spooled instances with one long-lived backend, one instance at a time.

Each instance goes through the CLI's own per-file code (``runtime.enhance.enhance_file``: the
one inference path, the same checks, the same derived DICOM and its deterministic UIDs) into
outgoing/<series>.derived/. Only once the derived file is durable does the received file
leave incoming/, so a crash at any moment leaves it in one place or the other: a restart
enhances it again into the same SOP Instance UID.

The worker thread runs at a lower CPU priority (``worker_nice``) than the receiving threads,
and so do the inference threads it starts (Linux threads inherit it), so that receiving
stays fast while images are being enhanced.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

from runtime.backends import Backend, BackendError
from runtime.dicom_io import Skipped
from runtime.enhance import (
    BackendUnusable, InferenceError, Settings, bounded_threads, check_backend, derivation_for, enhance_file,
    failure_cause, file_facts,
)
from runtime.inputs import Job
from runtime.logtext import cause, described
from runtime.node.config import NodeConfig
from runtime.node.metrics import Metrics
from runtime.node.spool import DERIVED, Spool
from runtime.pipeline import open_model, tile_plan
from runtime.pixels import UnsupportedImageError

LOG = logging.getLogger("medclear.node")
REOPEN_AFTER_S = 30.0  # a backend that stopped working is reopened after this long


def instance_key(path: Path) -> str:
    """The digest of the SOP Instance UID that names a spooled file (received, derived or original)."""
    return path.name.split(".", 1)[0]


def token(path: Path) -> str:
    """The log's name for a spooled instance: a prefix of its (hashed) file name."""
    return f"instance#{instance_key(path)[:10]}"


class Worker(threading.Thread):
    """Takes paths from its queue (and, at start, whatever incoming/ holds) and enhances them."""

    def __init__(self, spool: Spool, config: NodeConfig, metrics: Metrics, received_at: dict[str, float]) -> None:
        super().__init__(name="medclear-worker", daemon=True)
        self.spool, self.config, self.metrics = spool, config, metrics
        self.received_at = received_at  # instance_key -> monotonic receipt time (for latency)
        self.queue: "queue.Queue[Path]" = queue.Queue()
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set once the model is open (or could not be opened)
        self.error: str | None = None
        self.backend: Backend | None = None
        self.busy = False

    # --- lifecycle ----------------------------------------------------------------------

    def submit(self, path: Path) -> None:
        self.queue.put(path)

    def stop(self) -> None:
        """Finish the instance in hand, then return; the rest stays in incoming/."""
        self.stopping.set()

    def run(self) -> None:
        _lower_priority(self.config.worker_nice)
        try:
            self._open()
        except BackendError as error:
            self.error = cause(error, 1000)
        finally:
            self.ready.set()
        if self.error:
            return
        for path in self.spool.pending():  # resume what a previous run acknowledged
            self.submit(path)
        try:
            while not self.stopping.is_set():
                try:
                    path = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.busy = True
                try:
                    self.process(path)
                except Exception as error:  # e.g. the spool's disk failing: log, keep going
                    LOG.error("unexpected error with %s: %s; it stays in the spool for the next start",
                              token(path), described(error))
                finally:
                    self.busy = False
        finally:
            if self.backend is not None:
                self.backend.close()

    def _open(self) -> None:
        config = self.config
        self.backend = open_model(config.model, config.backend, threads=bounded_threads(config.threads))
        self.settings = Settings(outdir=Path(), overwrite=True, strength=config.strength,
                                 plan=tile_plan(self.backend))
        self.derivation = derivation_for(self.backend)
        LOG.info("model open for the life of the node: %s, %s", self.backend.contract.model_name,
                 self.backend.describe())

    @property
    def healthy(self) -> bool:
        return self.is_alive() and self.backend is not None and self.error is None

    # --- one instance ----------------------------------------------------------------------

    def process(self, path: Path) -> None:
        """Enhance one received instance; then forward it unchanged, drop it, or fail it."""
        if not path.exists():  # a duplicate queue entry, already done
            return
        start = time.monotonic()
        key = path.parent.name
        outdir = self.spool.output_dir(key, DERIVED)
        settings = replace(self.settings, outdir=outdir)
        problem, unsupported, facts = None, False, ""
        try:
            with self.spool.output_lock:
                outcome = enhance_file(Job(path, Path(path.stem)), self.backend, settings, self.derivation)
                self.spool.written(outcome.job.output(outdir, "dicom"))
            facts = file_facts(outcome.noise, settings.strength)
        except (Skipped, UnsupportedImageError) as error:  # SR, RT, colour, modality not covered
            problem, unsupported = cause(error), True
        except Exception as error:  # corrupt image, inference failure, disk full: this file only
            problem = failure_cause(error)
            if isinstance(error, InferenceError) and not self._backend_still_works(error):
                return  # the file stays in incoming/ for when the model runs again
        self._dispose(path, key, problem, unsupported, time.monotonic() - start, facts)
        if not self.spool.has_pending(key):
            self.spool.prune(path.parent)

    def _dispose(self, path: Path, key: str, problem: str | None, unsupported: bool, seconds: float,
                 facts: str = "") -> None:
        forward = self.config.forward_original
        if problem is None:
            self.metrics.count("enhanced")
            self.metrics.observe("enhance_seconds", seconds)
            LOG.info("enhanced %s (series#%s) in %.0f ms: %s", token(path), key[:10], seconds * 1000, facts)
        elif unsupported:
            self.metrics.count("unsupported")
            LOG.info("not enhanced %s: %s; %s", token(path), problem,
                     "forwarded unchanged" if forward else "not forwarded (--forward-original forwards it unchanged)")
        else:
            LOG.warning("FAILED to enhance %s: %s", token(path), problem)
        if forward:
            self.spool.forward_unchanged(path)
        elif problem is None:
            self.spool.remove(path)
        else:
            self.received_at.pop(instance_key(path), None)
            if unsupported:
                self.spool.remove(path)
            else:
                self.metrics.count("failed")
                self.spool.fail(path, f"enhancement failed: {problem}")

    def _backend_still_works(self, failure: InferenceError) -> bool:
        """After an inference error: True if the model still runs a plain input; otherwise the
        backend is closed, reopened after a pause, and False."""
        try:
            check_backend(self.backend, self.settings.plan, failure)
            return True
        except BackendUnusable as error:
            LOG.error("%s; reopening the model in %.0f s", cause(error, 500), REOPEN_AFTER_S)
            self.backend.close()
            self.backend = None
            if self.stopping.wait(REOPEN_AFTER_S):
                return False
            try:
                self._open()
            except BackendError as reopen:
                self.error = cause(reopen, 500)
                LOG.error("the model cannot be opened again: %s; the node stays up, instances wait in the spool",
                          self.error)
                self.stopping.set()
            return False


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: per thread, inherited by threads it starts)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted here: run at normal priority
        pass
