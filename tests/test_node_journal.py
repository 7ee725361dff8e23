"""The node's write-ahead journal (runtime/node/journal.py, materializer.py): records, replay,
torn and stale records, the checkpoint, rotation and recycling, back-pressure, kill -9.

A "crash" here is closing the journal's files without a checkpoint (what the process leaves
behind after kill -9 is what it had written: the page cache survives the process), except in
the test that kills a real process with SIGKILL mid-stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from node_fixtures import wait_for
from runtime.node.journal import ALIGN, HEADER, SUFFIX, Journal
from runtime.node.materializer import Materializer
from runtime.node.spool import JOURNAL, Spool, digest, series_key
from runtime_fixtures import REPO

KEY = "0123456789abcdef"


def instance(index: int) -> str:
    return f"{index:024x}"


def payload(index: int, size: int = 5000) -> bytes:
    return bytes((index * 7 + offset) % 251 for offset in range(size))


def open_journal(folder: Path, segment_bytes: int = 64 * 1024) -> tuple[Journal, list]:
    """A journal opened as Spool.open does; what it replayed, as (record, payload bytes)."""
    journal = Journal(folder, segment_bytes)
    replayed = []
    journal.replay(lambda record, data: replayed.append((record, bytes(data))))
    return journal.start(), replayed


def materialize(journal: Journal, count: int) -> list:
    """Take ``count`` records in order and mark them materialized (as the materializer does,
    without writing files); checkpoint."""
    taken = []
    for _ in range(count):
        record = journal.take(timeout=1)
        assert record is not None
        taken.append((record, journal.read(record)))
        journal.materialized(record)
    journal.checkpoint()
    return taken


def segment_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


# --- records ----------------------------------------------------------------------------------


def test_records_round_trip_in_order_with_their_names_and_bytes(tmp_path):
    journal, replayed = open_journal(tmp_path / "j")
    assert replayed == []
    sizes = [1, 4095, 4096, 12345, 0]
    for index, size in enumerate(sizes):
        data = payload(index, size)
        record = journal.append(KEY, instance(index), [data[:size // 2], memoryview(data)[size // 2:]])
        assert record.offset % ALIGN == 0 and record.size == size
    assert journal.pending_records == len(sizes) and journal.pending_bytes == sum(sizes)
    assert journal.has_pending(KEY) and not journal.has_pending("fedcba9876543210")
    taken = materialize(journal, len(sizes))
    assert [(r.key, r.instance, data) for r, data in taken] == [
        (KEY, instance(index), payload(index, size)) for index, size in enumerate(sizes)]
    assert journal.pending_records == journal.pending_bytes == 0 and not journal.has_pending(KEY)
    assert journal.take(timeout=0.01) is None
    journal.close()


def test_replay_after_a_crash_yields_every_record_in_order(tmp_path):
    journal, _ = open_journal(tmp_path / "j")
    for index in range(6):
        journal.append(KEY, instance(index), [payload(index)])
    journal.close()  # crash: nothing materialized, no checkpoint
    again, replayed = open_journal(tmp_path / "j")
    assert [(r.instance, data) for r, data in replayed] == [(instance(i), payload(i)) for i in range(6)]
    again.close()
    third, replayed = open_journal(tmp_path / "j")  # replayed records are checkpointed past
    assert replayed == []
    third.close()


def _corrupt(path: Path, position: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", ["torn payload", "torn header", "flipped bit", "zeroed"])
def test_a_torn_or_corrupt_last_record_is_ignored_and_the_earlier_ones_replayed(tmp_path, damage):
    journal, _ = open_journal(tmp_path / "j")
    records = [journal.append(KEY, instance(index), [payload(index)]) for index in range(3)]
    path = journal._segments[records[0].seq].path
    journal.close()
    last = records[-1]
    with open(path, "r+b") as handle:
        if damage == "torn payload":  # the write stopped halfway: the rest is what was there (zeros)
            handle.seek(last.payload_offset + last.size // 2)
            handle.write(bytes(last.size - last.size // 2))
        elif damage == "torn header":
            handle.seek(last.offset + 10)
            handle.write(bytes(HEADER.size - 10))
        elif damage == "zeroed":
            handle.seek(last.offset)
            handle.write(bytes(last.end - last.offset))
    if damage == "flipped bit":
        _corrupt(path, last.payload_offset + 100)
    again, replayed = open_journal(tmp_path / "j")
    assert [(r.instance, data) for r, data in replayed] == [(instance(i), payload(i)) for i in range(2)]
    again.close()


def test_a_corrupt_record_ends_the_replay_of_its_segment(tmp_path):
    """Nothing after a record that is not valid is taken for a record (it was never acknowledged:
    each record is flushed before the next is written)."""
    journal, _ = open_journal(tmp_path / "j")
    records = [journal.append(KEY, instance(index), [payload(index)]) for index in range(4)]
    path = journal._segments[records[0].seq].path
    journal.close()
    _corrupt(path, records[1].payload_offset)
    again, replayed = open_journal(tmp_path / "j")
    assert [r.instance for r, _ in replayed] == [instance(0)]
    again.close()


def test_a_failed_write_is_never_written_over_and_later_records_replay(tmp_path, monkeypatch):
    """A write that fails halfway (answered Out of Resources, never acknowledged) leaves its
    segment: the next record goes to the next segment, and replay finds the records around it."""
    import runtime.node.journal as journal_module

    journal, _ = open_journal(tmp_path / "j")
    before = journal.append(KEY, instance(0), [payload(0)])
    real = journal_module.pwrite_all

    def half_then_fail(descriptor, parts, offset):
        data = b"".join(bytes(part) for part in parts)
        os.pwrite(descriptor, data[: len(data) // 2], offset)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module, "pwrite_all", half_then_fail)
    with pytest.raises(OSError):
        journal.append(KEY, instance(1), [payload(1)])
    monkeypatch.setattr(journal_module, "pwrite_all", real)
    after = journal.append(KEY, instance(2), [payload(2, 100)])
    assert after.seq == before.seq + 1 and journal.pending_records == 2
    journal.close()
    again, replayed = open_journal(tmp_path / "j")
    assert [(r.instance, data) for r, data in replayed] == [(instance(0), payload(0)), (instance(2), payload(2, 100))]
    again.close()


# --- segments: rotation, recycling, stale records ---------------------------------------------


def test_rotation_spans_segments_and_recycles_materialized_ones(tmp_path):
    folder = tmp_path / "j"
    journal, _ = open_journal(folder, segment_bytes=64 * 1024)  # 5000-byte payloads: 8 per segment
    seqs = set()
    for index in range(30):
        seqs.add(journal.append(KEY, instance(index), [payload(index)]).seq)
        if index % 5 == 4:
            materialize(journal, 5)
            journal.prepare_spare()
    assert len(seqs) >= 4  # rotated into several segments
    assert len(segment_files(folder)) <= 3  # current, spare and at most one draining: the rest recycled
    assert all(path.stat().st_size == 64 * 1024 for path in segment_files(folder))
    journal.close()
    again, replayed = open_journal(folder, segment_bytes=64 * 1024)
    assert replayed == []  # all materialized and checkpointed
    again.close()


def test_rotation_keeps_unmaterialized_records_of_older_segments_for_replay(tmp_path):
    folder = tmp_path / "j"
    journal, _ = open_journal(folder, segment_bytes=64 * 1024)
    records = [journal.append(KEY, instance(index), [payload(index)]) for index in range(20)]
    assert len({record.seq for record in records}) == 3
    materialize(journal, 3)
    journal.close()
    again, replayed = open_journal(folder, segment_bytes=64 * 1024)
    assert [(r.instance, data) for r, data in replayed] == [(instance(i), payload(i)) for i in range(3, 20)]
    again.close()


def test_stale_records_of_a_recycled_segment_are_never_replayed(tmp_path):
    folder = tmp_path / "j"
    journal, _ = open_journal(folder, segment_bytes=64 * 1024)
    first = [journal.append(KEY, instance(index), [payload(index)]) for index in range(12)]  # fills segment 1
    old_seq = first[0].seq
    assert first[-1].seq == old_seq + 1
    materialize(journal, 12)  # segment 1 is done: recycled as the spare (renamed), its records still in it
    spare = journal._spare
    assert spare is not None and spare.seq > first[-1].seq
    stale = spare.path.read_bytes()
    assert stale[:4] == b"MCJ1" and int.from_bytes(stale[4:12], "little") == old_seq  # the old records are there
    for index in range(12, 16):  # fill segment 2, then write one short record over the recycled one's start
        journal.append(KEY, instance(index), [payload(index)])
    newest = journal.append(KEY, instance(99), [b"short"])
    assert newest.seq == spare.seq and newest.offset == 0
    journal.close()  # crash: segment 2's last 4 records and the newest not materialized
    again, replayed = open_journal(folder, segment_bytes=64 * 1024)
    assert [r.instance for r, _ in replayed] == [instance(i) for i in range(12, 16)] + [instance(99)]
    assert replayed[-1][1] == b"short"  # not the stale records that follow it in the recycled file
    again.close()


def test_the_checkpoint_prevents_materializing_a_record_twice(tmp_path):
    spool = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    for index in range(5):
        spool.journal.append(KEY, instance(index), [payload(index)])
    for _ in range(3):  # the materializer's steps for the first three
        record = spool.journal.take(timeout=1)
        spool.write_incoming(record.key, record.instance, spool.journal.read(record))
        spool.journal.materialized(record)
    spool.journal.checkpoint()
    spool.close()  # crash
    for path in spool.pending():  # the worker had enhanced the first three: they left incoming/
        path.unlink()
    again = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    assert sorted(path.stem for path in again.pending()) == [instance(3), instance(4)]
    again.close()


def test_a_torn_checkpoint_slot_falls_back_to_the_other(tmp_path):
    folder = tmp_path / "j"
    journal, _ = open_journal(folder)
    for index in range(4):
        journal.append(KEY, instance(index), [payload(index)])
    materialize(journal, 2)
    materialize(journal, 1)  # a newer checkpoint, in the other slot
    generation = journal._generation
    journal.close()
    _corrupt(folder / "checkpoint", (generation % 2) * 512 + 20)  # the newest slot torn
    again, replayed = open_journal(folder)
    assert [r.instance for r, _ in replayed] == [instance(2), instance(3)]  # from the older checkpoint
    again.close()


# --- the spool and the materializer ------------------------------------------------------------


def test_replay_after_a_crash_puts_every_acknowledged_instance_in_incoming_exactly_once(tmp_path):
    spool = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    sent = {f"1.2.3.{index}": payload(index, 3000 + 900 * index) for index in range(25)}
    for uid, data in sent.items():
        spool.journal.append(series_key("1.2.3"), digest(uid), [data])
    assert spool.used_bytes == sum(map(len, sent.values()))  # journaled bytes count for back-pressure
    assert spool.has_pending(series_key("1.2.3"))
    spool.close()  # crash before anything was materialized
    again = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    pending = again.pending()
    assert sorted(path.name for path in pending) == sorted(f"{digest(uid)}.dcm" for uid in sent)
    for uid, data in sent.items():
        assert (again.incoming_dir(series_key("1.2.3")) / f"{digest(uid)}.dcm").read_bytes() == data
    assert again.used_bytes == sum(map(len, sent.values())) and again.journal.pending_records == 0
    again.close()
    third = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    assert third.pending() == pending  # nothing replayed twice
    third.close()


def test_journaled_bytes_count_for_back_pressure(tmp_path):
    spool = Spool(tmp_path, limit_bytes=20_000, journal_segment_bytes=64 * 1024).open()
    spool.journal.append(KEY, instance(0), [payload(0, 15_000)])
    assert spool.refusal() is None and spool.used_bytes == 15_000
    spool.journal.append(KEY, instance(1), [payload(1, 6_000)])
    assert spool.used_bytes == 21_000 and "limit" in spool.refusal()
    assert spool.depth()[JOURNAL] == 2
    spool.close()


def test_the_materializer_hands_instances_on_in_order_and_stopping_drains(tmp_path):
    spool = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    handed: list[tuple[Path, str, float | None]] = []
    materializer = Materializer(spool, lambda path, key, at: handed.append((path, key, at)))
    materializer.start()
    for index in range(40):  # across several segments
        materializer.append("1.2.3", f"1.2.3.{index}", b"head", payload(index))
    big = payload(99, 70_000)  # larger than a segment: written into incoming/ directly, handed on at once
    materializer.append("1.2.3", "1.2.3.99", big)
    materializer.stop()
    materializer.join(30)
    assert not materializer.is_alive() and materializer.idle
    journaled = [(path, key, at) for path, key, at in handed if key != digest("1.2.3.99")]
    assert [key for _, key, _ in journaled] == [digest(f"1.2.3.{i}") for i in range(40)]  # in order
    for index, (path, _, at) in enumerate(journaled):
        assert path.read_bytes() == b"head" + payload(index) and at is not None
    (direct,) = [(path, at) for path, key, at in handed if key == digest("1.2.3.99")]
    assert direct[0].read_bytes() == big and direct[1] is None
    assert spool.used_bytes == sum(path.stat().st_size for path, _, _ in handed)
    assert len(segment_files(tmp_path / JOURNAL)) <= 3
    spool.close()
    again = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    assert len(again.pending()) == 41 and again.journal.pending_records == 0  # nothing replayed
    again.close()


def test_appends_from_several_threads_are_all_journaled(tmp_path):
    spool = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()

    def send(thread: int) -> None:
        for index in range(15):
            spool.journal.append(KEY, instance(thread * 100 + index), [payload(thread * 100 + index, 2000)])

    threads = [threading.Thread(target=send, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    again = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    expected = {instance(t * 100 + i): payload(t * 100 + i, 2000) for t in range(4) for i in range(15)}
    assert {path.stem: path.read_bytes() for path in again.pending()} == expected
    again.close()


def test_a_spool_opened_without_a_journal_replays_the_old_one_and_removes_it(tmp_path):
    spool = Spool(tmp_path, limit_bytes=10**9, journal_segment_bytes=64 * 1024).open()
    spool.journal.append(KEY, instance(1), [payload(1)])
    spool.close()
    direct = Spool(tmp_path, limit_bytes=10**9).open()
    assert [path.stem for path in direct.pending()] == [instance(1)] and direct.journal is None
    assert not (tmp_path / JOURNAL).exists()
    path = direct.receive("1.2.3", "1.2.3.4", b"direct")  # and receives directly
    assert path.read_bytes() == b"direct"
    direct.close()


CRASHER = """
import sys
from pathlib import Path
from runtime.node.spool import Spool
spool = Spool(Path(sys.argv[1]), limit_bytes=10**12, journal_segment_bytes=256 * 1024).open()
index = 0
while True:
    spool.journal.append("0123456789abcdef", f"{index:024x}", [bytes([index % 251]) * (20000 + index)])
    print(index, flush=True)  # acknowledged
    index += 1
"""


def test_kill9_mid_stream_loses_no_acknowledged_record(tmp_path):
    """A real SIGKILL while appending (across rotations): every record acknowledged before it
    is in incoming/ after the next open, byte for byte; at most the one in flight more."""
    process = subprocess.Popen([sys.executable, "-c", CRASHER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    acknowledged = -1
    try:
        for line in process.stdout:
            acknowledged = int(line)
            if acknowledged >= 60:  # about five segments
                break
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        for line in process.stdout:  # what it printed before the signal landed
            acknowledged = int(line)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert acknowledged >= 60
    spool = Spool(tmp_path, limit_bytes=10**12, journal_segment_bytes=256 * 1024).open()
    found = {path.stem: path.read_bytes() for path in spool.pending()}
    spool.close()
    for index in range(acknowledged + 1):
        assert found.pop(f"{index:024x}") == bytes([index % 251]) * (20000 + index), index
    assert set(found) <= {f"{acknowledged + 1:024x}"}  # written but not yet acknowledged, at most


def test_the_receiver_journals_and_the_materializer_hands_on(tmp_path):
    """Over DICOM: the receiver journals (Success), the materializer moves the instances into
    incoming/ (one series folder) and hands them on, never the receiver itself."""
    from benchmarks.orthanc import free_port
    from node_fixtures import ct_series, send
    from runtime.node.config import build
    from runtime.node.metrics import Metrics
    from runtime.node.receiver import Receiver

    paths = ct_series(tmp_path / "in", 12, "journal")
    spool = Spool(tmp_path / "spool", limit_bytes=10**9, journal_segment_bytes=128 * 1024).open()
    config = build({"spool": tmp_path / "spool", "forward": "PACS@127.0.0.1:1", "port": free_port(),
                    "bind": "127.0.0.1", "min_free_mb": 0})
    handed = []
    materializer = Materializer(spool, lambda path, key, at: handed.append(path))
    receiver = Receiver(spool, config, Metrics(dict), lambda path, key: pytest.fail("not journaled"),
                        materializer=materializer)
    materializer.start()
    receiver.start()
    try:
        assert set(send(paths, receiver.port).values()) == {0}
        wait_for(lambda: len(handed) == 12, 30, "12 instances in incoming/")
    finally:
        receiver.stop_listening()
        materializer.stop()
        materializer.join(30)
        spool.close()
    assert sorted(handed) == sorted(spool.pending()) and len({path.parent for path in handed}) == 1
