"""Enhancing spooled instances with long-lived models (MR's own opened on its first instance), one at a time.

The model lives in a child process (``runtime.node.enhancer``): there each instance goes
through the CLI's own per-file code (``runtime.enhance.enhance_file``: the one inference path,
the same checks, the same derived DICOM and its deterministic UIDs) into
outgoing/<series>.derived/, while this thread only waits for the answer, so receiving never
waits for the GIL behind an image being enhanced. Only once the derived file is durable does
the received file leave incoming/, so a crash at any moment leaves it in one place or the
other: a restart enhances it again into the same SOP Instance UID.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from runtime.logtext import cause, described
from runtime.node.config import NodeConfig
from runtime.node.enhancer import Enhancer, EnhancerError, ModelSettings
from runtime.node.metrics import Metrics
from runtime.node.spool import DERIVED, Spool

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
        self.model = Enhancer(ModelSettings(config.model, config.backend, config.threads, config.strength,
                                            config.worker_nice, config.modality_models))
        self.busy = False
        self.receiving: Callable[[], bool] = lambda: False  # the receiver's, set by the node

    # --- lifecycle ----------------------------------------------------------------------

    def submit(self, path: Path) -> None:
        self.queue.put(path)

    def stop(self) -> None:
        """Finish the instance in hand, then return; the rest stays in incoming/."""
        self.stopping.set()

    def run(self) -> None:
        try:
            self._open()
        except EnhancerError as error:
            self.error = cause(error, 1000)
        finally:
            self.ready.set()
        if self.error:
            return
        for path in self.spool.pending():  # resume what a previous run acknowledged
            self.submit(path)
        try:
            while not self.stopping.is_set():
                if not self.model.alive:  # it ended (killed, out of memory, or on the last instance)
                    self._reopen("the model process is not running", pause_s=0.0)
                    continue
                try:
                    path = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.wait_for_turn()
                self.busy = True
                try:
                    self.process(path)
                except Exception as error:  # e.g. the spool's disk failing: log, keep going
                    LOG.error("unexpected error with %s: %s; it stays in the spool for the next start",
                              token(path), described(error))
                finally:
                    self.busy = False
        finally:
            self.model.close()

    def wait_for_turn(self) -> None:
        """Let receiving go first (config.receive_first): wait while an association is open and
        fewer than that many received instances are queued, or until stopping."""
        backlog = self.config.receive_first
        while backlog and self.receiving() and self.queue.qsize() + 1 < backlog and not self.stopping.wait(0.05):
            pass

    def _open(self) -> None:
        LOG.info("model open for the life of the node, in a child process: %s", self.model.start())

    @property
    def healthy(self) -> bool:
        return self.is_alive() and self.model.alive and self.error is None

    # --- one instance ----------------------------------------------------------------------

    def process(self, path: Path) -> None:
        """Enhance one received instance; then forward it unchanged, drop it, or fail it."""
        if not path.exists():  # a duplicate queue entry, already done
            return
        start = time.monotonic()
        key = path.parent.name
        with self.spool.output_lock:
            result = self.model.enhance(path, self.spool.output_dir(key, DERIVED))
            if result.output is not None:
                self.spool.written(Path(result.output))
        if result.broken is not None:
            self._reopen(result.broken)
            return  # the file stays in incoming/ for when the model runs again
        self._dispose(path, key, result.problem, result.unsupported, time.monotonic() - start, result.facts)
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

    def _reopen(self, why: str, pause_s: float = REOPEN_AFTER_S) -> None:
        """Close the model, wait ``pause_s``, open it again; if it cannot be opened, stop (the
        node stays up, instances wait in the spool)."""
        if why:
            LOG.error("%s; reopening the model in %.0f s", why, pause_s)
        self.model.close()
        if self.stopping.wait(pause_s):
            return
        try:
            self._open()
        except EnhancerError as error:
            self.error = cause(error, 500)
            LOG.error("the model cannot be opened again: %s; the node stays up, instances wait in the spool",
                      self.error)
            self.stopping.set()
