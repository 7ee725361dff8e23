"""Receiving into the journal, and moving journaled instances into incoming/ behind it.

``append`` is the receiver's durable write: once the instance's journal record is fdatasynced,
the C-STORE may be answered Success. The materializer thread then takes records in journal
order, writes each into ``incoming/<series>/<instance>.dcm`` the way a direct receive does
(temporary file, fdatasync, rename, folder fsync: off the acknowledgement path here), hands the
path to the worker, and checkpoints the journal (after every record while it keeps up, after
every ``CHECKPOINT_EVERY`` while it catches up), which recycles wholly materialized segments. It
also prepares the spare segment, so that a rotation never waits for one. Stopping drains: every
record journaled is materialized before the thread ends (the receiver has stopped by then).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from runtime.logtext import cause
from runtime.node.journal import Record
from runtime.node.spool import Spool, digest, series_key

LOG = logging.getLogger("medclear.node")
CHECKPOINT_EVERY = 8  # records materialized between checkpoints while a backlog is worked off
RETRY_S = 1.0  # a record that could not be materialized (disk trouble) is tried again after this


class Materializer(threading.Thread):
    """Journals received instances and moves them into incoming/, in order."""

    def __init__(self, spool: Spool, on_received: Callable[[Path, str, float | None], None]) -> None:
        super().__init__(name="medclear-materializer", daemon=True)
        self.spool = spool
        self.on_received = on_received  # (path in incoming/, instance digest, time acknowledged)
        self.stopping = threading.Event()
        self.busy = False

    def append(self, series_uid: str, sop_uid: str, *parts: bytes | memoryview) -> None:
        """Make a received instance durable: journaled, or (too large for a segment) written
        into incoming/ directly and handed on at once. OSError if it cannot be."""
        journal = self.spool.journal
        if journal is None:
            raise OSError("the spool's journal is not open")
        key, instance = series_key(series_uid), digest(sop_uid)
        if journal.fits(sum(memoryview(part).nbytes for part in parts)):
            journal.append(key, instance, parts)
        else:
            self.on_received(self.spool.write_incoming(key, instance, *parts), instance, None)

    def stop(self) -> None:
        """Materialize what is journaled, then return."""
        self.stopping.set()

    @property
    def idle(self) -> bool:
        """Nothing journaled waits to be materialized."""
        journal = self.spool.journal
        return not self.busy and (journal is None or journal.pending_records == 0)

    def run(self) -> None:
        journal = self.spool.journal
        unsaved = 0
        while True:
            record = journal.take(timeout=0.2)
            if record is None:
                if self.stopping.is_set():
                    break
                self._prepare_spare()
                continue
            self.busy = True
            try:
                if not self._materialize(record):
                    break  # stopping with the disk failing: the journal keeps it for the next start
                unsaved += 1
                if (unsaved >= CHECKPOINT_EVERY or not journal.queued) and self._checkpoint():
                    unsaved = 0
                self._prepare_spare()
            finally:
                self.busy = False
        if unsaved:
            self._checkpoint()

    def _materialize(self, record: Record) -> bool:
        """Write ``record`` into incoming/ and hand it on, trying again while the disk fails;
        False if stopping came first."""
        while True:
            try:
                path = self.spool.write_incoming(record.key, record.instance, self.spool.journal.read(record))
                break
            except OSError as error:
                LOG.error("cannot move a journaled instance into incoming/: %s; it stays in the journal, "
                          "trying again in %.0f s", cause(error.strerror or error), RETRY_S)
                if self.stopping.wait(RETRY_S):
                    return False
        self.spool.journal.materialized(record)
        self.on_received(path, record.instance, record.acked_at)
        return True

    def _checkpoint(self) -> bool:
        """Checkpoint the journal; False (logged) if the disk failed: the next one covers it."""
        try:
            self.spool.journal.checkpoint()
            return True
        except OSError as error:
            LOG.error("cannot checkpoint the journal: %s", cause(error.strerror or error))
            return False

    def _prepare_spare(self) -> None:
        try:
            self.spool.journal.prepare_spare()
        except OSError as error:  # e.g. the disk full: a rotation tries again, or C-STOREs get Out of Resources
            LOG.error("cannot prepare a spare journal segment: %s", cause(error.strerror or error))
