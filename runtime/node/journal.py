"""The write-ahead journal of received instances: a C-STORE is answered Success once its record
is here, written with one fdatasync that changes no file-system metadata.

```
SPOOL/journal/<seq, 16 hex digits>.seg   segments: preallocated (zero-filled, or recycled), fixed size
SPOOL/journal/checkpoint                 how far materializing has got: two CRC-checked slots
```

A record starts at a 4096-byte boundary (so that appending never rewrites a page that holds an
acknowledged record): a header (magic, the segment's sequence number, the metadata's and the
payload's lengths, a CRC32 over those, the metadata and the payload), the metadata (JSON: the
spool's series key and instance digest, never patient data) and the payload (File Meta
Information + data set, as ``Spool.receive`` gets them). Appending is serialised: each record
is written and fdatasynced before the next, so every record before a durable one is durable
too, and a torn record (kill -9 or a power cut mid-write, never acknowledged) can only be the
last one written. Replaying reads each segment from its start (the checkpoint's segment from
the checkpoint's offset) until the first record that is not valid: a wrong magic, a sequence
number other than the segment's (the stale records of a recycled segment) or a CRC mismatch.

Segments live through: *spare* (ready before it is needed, so that a rotation costs a C-STORE
nothing; made off the acknowledgement path), *current* (appended to), *draining* (full; its
records being materialized), then recycled as the next spare (renamed to the next sequence
number, folder fsynced) or deleted. The checkpoint (the position after the last record
materialized) is written before a segment is recycled; a restart replays only what lies past
it. Sequence numbers only grow; a segment's records carry its number.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from runtime.node.durable import datasync, fsync_dir, pwrite_all

SEGMENT_BYTES = 64 * 2**20
ALIGN = 4096
MAGIC = b"MCJ1"
HEADER = struct.Struct("<4sQIQI")  # magic, segment sequence number, metadata length, payload length, CRC32
FIELDS = slice(4, HEADER.size - 4)  # what the CRC covers of the header
MAX_META = 1024
SUFFIX = ".seg"
CHECKPOINT = "checkpoint"
SLOT = struct.Struct("<4sQQQI")  # magic, generation, sequence number, offset, CRC32 of the three numbers
SLOT_MAGIC = b"MCCP"
SLOT_BYTES = 512  # one slot per sector: writing one never tears the other
NAMES = re.compile(r"[0-9a-f]{8,64}|no-series")  # the spool's series keys and instance digests
ZEROS = bytes(2**20)


@dataclass(frozen=True)
class Record:
    """One journaled instance: where it lies and the spool's names for it."""

    seq: int  # its segment's sequence number
    offset: int  # its header's position in the segment
    end: int  # the position after its payload
    key: str  # series key (incoming/<key>/)
    instance: str  # instance digest (<instance>.dcm)
    size: int  # payload bytes
    acked_at: float = 0.0  # time.monotonic() once durable

    @property
    def payload_offset(self) -> int:
        return self.end - self.size


class Segment:
    """An open segment file."""

    def __init__(self, seq: int, path: Path, descriptor: int) -> None:
        self.seq, self.path, self.fd = seq, path, descriptor
        self.used = 0  # where the next record goes (aligned)
        self.last_end = 0  # the end of its last record: materializing must get there
        self.full = False  # no more records (a write failed: never write over a half-written one)


def aligned(position: int) -> int:
    return -(-position // ALIGN) * ALIGN


def encode_meta(key: str, instance: str) -> bytes:
    return json.dumps({"series": key, "instance": instance}, separators=(",", ":")).encode("ascii")


def decode_meta(data: bytes) -> tuple[str, str] | None:
    """(series key, instance digest), or None unless both are names the spool could have made."""
    try:
        meta = json.loads(data)
        key, instance = meta["series"], meta["instance"]
    except (ValueError, TypeError, KeyError):
        return None
    if not (isinstance(key, str) and isinstance(instance, str) and NAMES.fullmatch(key) and NAMES.fullmatch(instance)):
        return None
    return key, instance


def body_crc(meta: bytes, parts: Sequence[bytes | memoryview]) -> int:
    crc = zlib.crc32(meta)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


def pack_header(seq: int, meta_length: int, payload_length: int, crc_of_body: int) -> bytes:
    """The header; its CRC goes on from the body's over the header's numbers."""
    numbers = HEADER.pack(MAGIC, seq, meta_length, payload_length, 0)[FIELDS]
    return HEADER.pack(MAGIC, seq, meta_length, payload_length, zlib.crc32(numbers, crc_of_body))


def scan(descriptor: int, seq: int, start: int, size: int) -> Iterator[tuple[Record, memoryview]]:
    """The valid records of segment ``seq`` from ``start`` on, with their payloads, up to the
    first that is not (torn, stale, zeros, the end)."""
    offset = start
    while offset + HEADER.size <= size:
        head = os.pread(descriptor, HEADER.size, offset)
        if len(head) < HEADER.size:
            return
        magic, found, meta_length, payload_length, crc = HEADER.unpack(head)
        end = offset + HEADER.size + meta_length + payload_length
        if magic != MAGIC or found != seq or meta_length > MAX_META or end > size:
            return
        body = os.pread(descriptor, end - offset - HEADER.size, offset + HEADER.size)
        if len(body) != end - offset - HEADER.size or zlib.crc32(head[FIELDS], zlib.crc32(body)) != crc:
            return
        names = decode_meta(body[:meta_length])
        if names is None:
            return
        yield Record(seq, offset, end, *names, payload_length), memoryview(body)[meta_length:]
        offset = aligned(end)


class Journal:
    """Appends records durably, hands them out in order to be materialized, checkpoints, recycles.

    ``append`` runs in the receiving threads; ``take``, ``read``, ``materialized``,
    ``checkpoint`` and ``prepare_spare`` in one materializing thread.
    """

    def __init__(self, folder: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        if segment_bytes < 2 * ALIGN:
            raise ValueError(f"a journal segment needs at least {2 * ALIGN} bytes")
        self.folder = folder
        self.segment_bytes = segment_bytes - segment_bytes % ALIGN
        self._write_lock = threading.Lock()  # one record written and flushed at a time, in order
        self._state = threading.Condition()  # the queue, the counts, the segments
        self._spare_lock = threading.Lock()  # making or taking the spare; the next sequence number
        self._queue: deque[Record] = deque()  # durable, not yet taken to be materialized
        self._segments: dict[int, Segment] = {}  # current and draining
        self._current: Segment | None = None
        self._spare: Segment | None = None
        self._next_seq = 1
        self._done = (0, 0)  # the position after the last record materialized
        self._saved = (0, 0)  # the same, as the checkpoint on disk has it
        self._generation = 0
        self._checkpoint_fd: int | None = None
        self.pending_bytes = 0  # payload bytes journaled and not yet materialized
        self.pending_records = 0
        self._pending_series: Counter[str] = Counter()

    # --- start ---------------------------------------------------------------------------

    def replay(self, materialize: Callable[[Record, memoryview], object]) -> int:
        """Call ``materialize(record, payload)`` for every valid record past the checkpoint, in
        order (what a previous run acknowledged and had not materialized); how many."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True)
            fsync_dir(self.folder.parent)
        self._open_checkpoint()
        seq0, offset0 = self._saved
        files = self._segment_files()
        count = 0
        for seq in sorted(seq for seq in files if seq >= seq0):
            descriptor = os.open(files[seq], os.O_RDONLY)
            try:
                size = os.fstat(descriptor).st_size
                for record, payload in scan(descriptor, seq, aligned(offset0) if seq == seq0 else 0, size):
                    materialize(record, payload)
                    count += 1
            finally:
                os.close(descriptor)
        self._next_seq = max([seq0, *files]) + 1
        return count

    def start(self) -> "Journal":
        """After ``replay`` (everything it found is materialized): checkpoint past every old
        segment, then recycle them as the current and spare segments (or make zero-filled ones)."""
        old = self._segment_files()
        self._write_checkpoint((self._next_seq, 0))
        reusable = [path for path in old.values() if path.stat().st_size == self.segment_bytes]
        for path in old.values():
            if path not in reusable:
                path.unlink()
        with self._spare_lock:
            current = self._new_segment(reusable.pop() if reusable else None)
            self._spare = self._new_segment(reusable.pop() if reusable else None)
        for path in reusable:
            path.unlink()
        fsync_dir(self.folder)
        with self._state:
            self._current = current
            self._segments = {current.seq: current}
            self._done = (current.seq, 0)
        return self

    def close(self) -> None:
        """Close the files, after the append in progress if any (what is not checkpointed is
        replayed at the next start)."""
        with self._write_lock, self._state:
            segments = list(self._segments.values())
            self._segments, self._current = {}, None
        with self._spare_lock:
            if self._spare is not None:
                segments.append(self._spare)
                self._spare = None
        for segment in segments:
            os.close(segment.fd)
        if self._checkpoint_fd is not None:
            os.close(self._checkpoint_fd)
            self._checkpoint_fd = None

    # --- appending (the acknowledgement path) ------------------------------------------

    def fits(self, size: int) -> bool:
        """Whether a payload of ``size`` bytes fits in a segment."""
        return HEADER.size + MAX_META + size <= self.segment_bytes

    def append(self, key: str, instance: str, parts: Sequence[bytes | memoryview]) -> Record:
        """Journal one instance (``parts`` one after the other): on return it is durable (written
        and fdatasynced) and queued to be materialized. ValueError if it does not ``fits``."""
        meta = encode_meta(key, instance)
        size = sum(memoryview(part).nbytes for part in parts)
        if not self.fits(size):
            raise ValueError(f"{size} bytes do not fit in a journal segment")
        crc = body_crc(meta, parts)
        with self._write_lock:
            segment = self._current
            if segment is None:
                raise OSError("the journal is closed")
            if segment.full or segment.used + HEADER.size + len(meta) + size > self.segment_bytes:
                segment = self._rotate()
            header = pack_header(segment.seq, len(meta), size, crc)
            offset = segment.used
            try:
                pwrite_all(segment.fd, [header + meta, *parts], offset)
                datasync(segment.fd)
            except BaseException:
                segment.full = True
                raise
            end = offset + HEADER.size + len(meta) + size
            record = Record(segment.seq, offset, end, key, instance, size, time.monotonic())
            with self._state:
                segment.used, segment.last_end = aligned(end), end
                self._queue.append(record)
                self.pending_bytes += size
                self.pending_records += 1
                self._pending_series[key] += 1
                self._state.notify_all()
        return record

    def _rotate(self) -> Segment:
        """The spare becomes the current segment (made now if it is not ready: a stall)."""
        with self._spare_lock:
            segment = self._spare or self._new_segment(None)
            self._spare = None
        with self._state:
            self._current = segment
            self._segments[segment.seq] = segment
        return segment

    # --- materializing (one thread) ------------------------------------------------------

    def take(self, timeout: float) -> Record | None:
        """The oldest record not yet taken, waiting at most ``timeout`` seconds for one."""
        with self._state:
            if not self._queue:
                self._state.wait(timeout)
            return self._queue.popleft() if self._queue else None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def read(self, record: Record) -> bytes:
        """A record's payload."""
        with self._state:
            segment = self._segments[record.seq]
        data = os.pread(segment.fd, record.size, record.payload_offset)
        if len(data) != record.size:
            raise OSError(f"journal segment {record.seq} is shorter than its record")
        return data

    def materialized(self, record: Record) -> None:
        """``record`` (the one ``take`` gave last) is durably in the spool."""
        with self._state:
            self._done = (record.seq, record.end)
            self.pending_bytes -= record.size
            self.pending_records -= 1
            self._pending_series[record.key] -= 1
            if self._pending_series[record.key] <= 0:
                del self._pending_series[record.key]

    def has_pending(self, key: str) -> bool:
        """Whether an instance of this series is journaled and not yet materialized."""
        return self._pending_series.get(key, 0) > 0

    def checkpoint(self) -> None:
        """Make the materialized position durable, then recycle (or delete) every segment
        whose records are all materialized."""
        with self._state:
            done = self._done
            finished = [segment for segment in self._segments.values() if segment is not self._current
                        and (segment.seq < done[0] or (segment.seq == done[0] and done[1] >= segment.last_end))]
        if done != self._saved:
            self._write_checkpoint(done)
        for segment in finished:
            with self._state:
                del self._segments[segment.seq]
            self._retire(segment)

    def prepare_spare(self) -> None:
        """Make a zero-filled spare segment if there is none and none will be recycled soon
        (no segment draining, or the current one half full)."""
        with self._state:
            current = self._current
            if current is None:
                return
            draining = len(self._segments) > 1
            soon = current.full or current.used * 2 >= self.segment_bytes
        if self._spare is not None or (draining and not soon):
            return
        with self._spare_lock:
            if self._spare is None:
                self._spare = self._new_segment(None)

    # --- segment files ---------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:016x}{SUFFIX}"

    def _segment_files(self) -> dict[int, Path]:
        found = {}
        for path in self.folder.glob(f"*{SUFFIX}"):
            try:
                found[int(path.stem, 16)] = path
            except ValueError:
                continue
        return found

    def _new_segment(self, recycled: Path | None) -> Segment:
        """The next sequence number's segment (with ``_spare_lock`` held): ``recycled`` renamed,
        or a new zero-filled file; durable (data, size, name) before it is returned."""
        seq = self._next_seq
        path = self._path(seq)
        if recycled is not None:
            os.replace(recycled, path)
            descriptor = os.open(path, os.O_RDWR)
        else:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                written = 0
                while written < self.segment_bytes:
                    written += os.pwrite(descriptor, ZEROS[: self.segment_bytes - written], written)
                os.fsync(descriptor)
            except BaseException:
                os.close(descriptor)
                path.unlink(missing_ok=True)
                raise
        fsync_dir(self.folder)
        self._next_seq = seq + 1
        return Segment(seq, path, descriptor)

    def _retire(self, segment: Segment) -> None:
        """A segment wholly materialized (and checkpointed past): the spare if none is ready, else deleted."""
        os.close(segment.fd)
        with self._spare_lock:
            if self._spare is None and self._current is not None:
                self._spare = self._new_segment(segment.path)
                return
        segment.path.unlink(missing_ok=True)

    # --- the checkpoint ----------------------------------------------------------------------

    def _open_checkpoint(self) -> None:
        """Read the checkpoint (the newer valid slot), creating the file if there is none."""
        path = self.folder / CHECKPOINT
        self._checkpoint_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        data = os.pread(self._checkpoint_fd, 2 * SLOT_BYTES, 0)
        best: tuple[int, int, int] | None = None
        for slot in range(2):
            raw = data[slot * SLOT_BYTES: slot * SLOT_BYTES + SLOT.size]
            if len(raw) < SLOT.size:
                continue
            magic, generation, seq, offset, crc = SLOT.unpack(raw)
            if magic == SLOT_MAGIC and zlib.crc32(raw[4:-4]) == crc and (best is None or generation > best[0]):
                best = (generation, seq, offset)
        if len(data) < 2 * SLOT_BYTES:  # new: make its size durable once, so that updates are data only
            os.pwrite(self._checkpoint_fd, bytes(2 * SLOT_BYTES - len(data)), len(data))
            os.fsync(self._checkpoint_fd)
            fsync_dir(self.folder)
        if best is not None:
            self._generation, self._saved = best[0], (best[1], best[2])

    def _write_checkpoint(self, position: tuple[int, int]) -> None:
        generation = self._generation + 1
        numbers = SLOT.pack(SLOT_MAGIC, generation, *position, 0)[4:-4]
        slot = SLOT_MAGIC + numbers + struct.pack("<I", zlib.crc32(numbers))
        os.pwrite(self._checkpoint_fd, slot, (generation % 2) * SLOT_BYTES)
        datasync(self._checkpoint_fd)
        self._generation, self._saved = generation, position
