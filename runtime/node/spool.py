"""The node's durable spool: every acknowledged instance lives in exactly one of its folders.

```
SPOOL/incoming/<series>/<instance>.dcm            received and acknowledged, not yet enhanced
SPOOL/outgoing/<series>.derived/<instance>.enhanced.dcm   enhanced, waiting to be forwarded
SPOOL/outgoing/<series>.original/<instance>.dcm   to be forwarded unchanged (--forward-original)
SPOOL/failed/<series>.<kind>/<file> + <file>.reason   given up on, one-line reason beside it
SPOOL/tmp/                                        files being received (never acknowledged)
SPOOL/journal/                                    received and acknowledged, not yet in incoming/
SPOOL/attempts.json                               forwarding attempts so far of files in outgoing/
```

``<series>`` and ``<instance>`` are SHA-256 digests of the source Series and SOP Instance
UIDs: names never carry patient data, and a re-sent instance lands on the same name. Every
file is written to a temporary name, fsynced, renamed into place and its folder fsynced
before anyone is told it exists, and a crash at any moment leaves each instance in one folder
or another (never in none). With a journal (``runtime.node.journal``), a received instance is
first a record there (durable with one fdatasync: what the C-STORE's Success waits for), then
materialized into incoming/ by a background thread; ``open`` replays what a previous run
journaled and had not materialized. Without one, ``receive`` writes into incoming/ directly
before the Success. One node per spool: a lock file is held while it runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

from runtime.logtext import cause
from runtime.node.durable import datasync, fsync_dir, write_all
from runtime.node.journal import SEGMENT_BYTES, Journal
from runtime.outputs import TEMP_PREFIX

LOG = logging.getLogger("medclear.node")
INCOMING, OUTGOING, FAILED, TMP, JOURNAL = "incoming", "outgoing", "failed", "tmp", "journal"
DERIVED, ORIGINAL = "derived", "original"
REASON_SUFFIX = ".reason"
ATTEMPTS = "attempts.json"
NO_SERIES = "no-series"


class SpoolBusy(RuntimeError):
    """Another node holds this spool."""


def digest(uid: str, length: int = 24) -> str:
    """A file-name-safe, patient-free key for a UID."""
    return hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def series_key(series_uid: str) -> str:
    return digest(series_uid, 16) if series_uid else NO_SERIES


def is_payload(path: Path) -> bool:
    """A spooled DICOM file (not a temporary file, not a reason file)."""
    return path.suffix == ".dcm" and not path.name.startswith(".")


class Spool:
    """The spool folder, its size accounting (for back-pressure) and its atomic moves.

    ``journal_segment_bytes``: receive through a write-ahead journal of segments this large
    (``journal``, open once ``open`` returned); 0: write into incoming/ directly."""

    def __init__(self, root: Path, limit_bytes: int, min_free_bytes: int = 0, journal_segment_bytes: int = 0) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.min_free_bytes = min_free_bytes
        self.journal_segment_bytes = journal_segment_bytes
        self.journal: Journal | None = None
        self._lock = threading.Lock()  # incoming/ folder creation/removal and the byte count
        # Held while a file is written into outgoing/ and while an emptied series folder there
        # is removed, so that a folder is never removed under a writer.
        self.output_lock = threading.Lock()
        self._bytes = 0
        self._lock_file: int | None = None

    # --- folders -----------------------------------------------------------------------

    def area(self, name: str) -> Path:
        return self.root / name

    def incoming_dir(self, key: str) -> Path:
        return self.root / INCOMING / key

    def output_dir(self, key: str, kind: str) -> Path:
        return self.root / OUTGOING / f"{key}.{kind}"

    def open(self) -> "Spool":
        """Create the folders, take the lock, drop what was never acknowledged, replay the
        journal into incoming/, count the bytes."""
        for name in (INCOMING, OUTGOING, FAILED, TMP):
            self.area(name).mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(self.root / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_file)
            self._lock_file = None
            raise SpoolBusy(f"another medclear node is using the spool {self.root}") from None
        for leftover in self.area(TMP).iterdir():  # half-received: never acknowledged
            _remove(leftover)
        for name in (INCOMING, OUTGOING):
            for leftover in self.area(name).glob(f"*/{TEMP_PREFIX}*"):  # half-written outputs
                _remove(leftover)
        try:
            self._open_journal()
        except BaseException:
            self.close()
            raise
        self._bytes = sum(path.stat().st_size for name in (INCOMING, OUTGOING) for path in self._files(name))
        return self

    def _open_journal(self) -> None:
        """Materialize what the journal holds past its checkpoint (acknowledged by a previous run),
        then have it ready for appending; or, without a journal now, remove the old one once replayed."""
        folder = self.area(JOURNAL)
        if not self.journal_segment_bytes and not folder.is_dir():
            return
        journal = Journal(folder, self.journal_segment_bytes or SEGMENT_BYTES)
        try:
            count = journal.replay(lambda record, payload: self.write_incoming(record.key, record.instance, payload))
            if count:
                LOG.info("journal: %d acknowledged instance(s) of an earlier run moved into incoming/", count)
            if self.journal_segment_bytes:
                self.journal = journal.start()
                return
        except BaseException:
            journal.close()
            raise
        journal.close()
        shutil.rmtree(folder)
        fsync_dir(self.root)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _files(self, name: str) -> list[Path]:
        return [path for path in self.area(name).glob("*/*") if is_payload(path)]

    # --- back-pressure ---------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes in incoming/ and outgoing/, and journaled but not yet in incoming/."""
        return self._bytes + (self.journal.pending_bytes if self.journal is not None else 0)

    def _account(self, delta: int) -> None:
        with self._lock:
            self._bytes = max(0, self._bytes + delta)

    def refusal(self) -> str | None:
        """Why a new instance cannot be taken now (spool over its limit, disk nearly full), or None."""
        used = self.used_bytes
        if used >= self.limit_bytes:
            return f"spool holds {used // 2**20} MiB, its limit is {self.limit_bytes // 2**20} MiB"
        if self.min_free_bytes:
            free = shutil.disk_usage(self.root).free
            if free < self.min_free_bytes:
                return f"only {free // 2**20} MiB free on the spool's disk (--min-free-mb)"
        return None

    # --- receiving -------------------------------------------------------------------------

    def receive(self, series_uid: str, sop_uid: str, *parts: bytes | memoryview) -> Path:
        """Write a received instance (``parts`` one after the other) durably into incoming/; its
        path once it is safe."""
        return self.write_incoming(series_key(series_uid), digest(sop_uid), *parts)

    def write_incoming(self, key: str, instance: str, *parts: bytes | memoryview) -> Path:
        """Write an instance durably to incoming/<key>/<instance>.dcm (replacing the same
        instance, re-sent); its path once it is safe."""
        target = self.incoming_dir(key) / f"{instance}.dcm"
        temp = self.area(TMP) / f"{TEMP_PREFIX}{target.parent.name}-{target.name}-{threading.get_ident()}"
        try:
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for part in parts:
                    write_all(descriptor, part)
                datasync(descriptor)
            finally:
                os.close(descriptor)
            self._place(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return target

    def _place(self, temp: Path, target: Path) -> None:
        """Rename a received ``temp`` file onto ``target`` (creating its folder), count it and
        make both durable."""
        with self._lock:
            created = not target.parent.is_dir()
            target.parent.mkdir(parents=True, exist_ok=True)
            replaced = target.stat().st_size if target.exists() else 0  # the same instance, re-sent
            size = temp.stat().st_size
            os.replace(temp, target)
            self._bytes += size - replaced
        fsync_dir(target.parent)
        if created:
            fsync_dir(target.parent.parent)

    def pending(self) -> list[Path]:
        """Received instances not yet enhanced, oldest first (what a restart resumes)."""
        return sorted(self._files(INCOMING), key=_mtime)

    def has_pending(self, key: str) -> bool:
        """Whether incoming/ (or the journal) still holds instances of this source series."""
        if self.journal is not None and self.journal.has_pending(key):
            return True
        folder = self.incoming_dir(key)
        try:
            return any(is_payload(path) for path in folder.iterdir())
        except FileNotFoundError:
            return False

    # --- after enhancement -----------------------------------------------------------------

    def written(self, path: Path) -> None:
        """A file that runtime.outputs wrote (atomically, fsynced) into outgoing/: make its
        rename durable and count it."""
        with self._lock:
            self._bytes += path.stat().st_size
        fsync_dir(path.parent)
        fsync_dir(path.parent.parent)

    def forward_unchanged(self, path: Path) -> Path:
        """Move a received instance to outgoing/<series>.original/ (sent as it came)."""
        target = self.output_dir(path.parent.name, ORIGINAL) / path.name
        with self.output_lock:
            created = not target.parent.is_dir()
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        fsync_dir(target.parent)
        if created:
            fsync_dir(target.parent.parent)
        fsync_dir(path.parent)
        return target

    def remove(self, path: Path) -> None:
        """Drop a spooled file (forwarded, or not to be forwarded)."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self._account(-size)
        fsync_dir(path.parent)

    def fail(self, path: Path, reason: str) -> Path:
        """Move a spooled file to failed/<its series folder>/ with a one-line ``.reason`` file
        beside it."""
        target = self.area(FAILED) / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        reason_file = target.with_name(target.name + REASON_SUFFIX)
        reason_file.write_text(cause(reason, 500) + "\n")
        size = path.stat().st_size
        os.replace(path, target)
        self._account(-size)
        fsync_dir(target.parent)
        fsync_dir(path.parent)
        return target

    def requeue_failed(self) -> int:
        """Move everything in failed/ back to be forwarded (originals) or enhanced again; how many."""
        count = 0
        for path in self._files(FAILED):
            key, _, kind = path.parent.name.partition(".")
            if kind in (DERIVED, ORIGINAL):
                target = self.output_dir(key, kind) / path.name
            else:  # enhancement failed: try it again from incoming/
                target = self.incoming_dir(key) / path.name
            path.with_name(path.name + REASON_SUFFIX).unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            self._account(target.stat().st_size)
            fsync_dir(target.parent)
            count += 1
        return count

    # --- forwarding ----------------------------------------------------------------------

    def read_attempts(self) -> dict[Path, int]:
        """Forwarding attempts counted by earlier runs, for the files still in outgoing/."""
        try:
            saved = json.loads((self.root / ATTEMPTS).read_text())
            counts = {self.root / name: int(count) for name, count in saved.items()}
        except (OSError, ValueError, TypeError, AttributeError):  # none yet, or unreadable: count from zero
            return {}
        return {path: count for path, count in counts.items() if path.is_file()}

    def write_attempts(self, attempts: dict[Path, int]) -> None:
        """Keep the attempt counts across restarts (replaced atomically; fsynced, so that not even
        a power cut resets the bounded retries of a node restarting in a loop)."""
        saved = {str(path.relative_to(self.root)): count for path, count in attempts.items()}
        temp = self.area(TMP) / f"{TEMP_PREFIX}{ATTEMPTS}"
        with open(temp, "w") as handle:
            json.dump(saved, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.root / ATTEMPTS)
        fsync_dir(self.root)

    def outgoing_series(self) -> list[Path]:
        """Folders in outgoing/ that hold files to forward, oldest change first."""
        folders = [folder for folder in self.area(OUTGOING).iterdir() if folder.is_dir()]
        return sorted(folders, key=_mtime)

    def prune(self, folder: Path) -> None:
        """Remove an emptied series folder (so outgoing/ and incoming/ do not fill with them)."""
        with self.output_lock if folder.parent.name == OUTGOING else self._lock:
            try:
                folder.rmdir()
            except OSError:  # not empty (a new file arrived) or already gone
                pass

    def depth(self) -> dict[str, int]:
        """Files per area, and records journaled not yet in incoming/ (for /metrics)."""
        depth = {name: len(self._files(name)) for name in (INCOMING, OUTGOING, FAILED)}
        return {**depth, JOURNAL: self.journal.pending_records if self.journal is not None else 0}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
