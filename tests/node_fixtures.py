"""Helpers for the DICOM node tests: small CT series, a pynetdicom sender, the node as a
subprocess (for kill -9 and SIGTERM) or in this process, and waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE, build_context

from runtime_fixtures import REPO, pydicom_file

SENDER_AE = "SCANNER"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def ct_series(folder: Path, count: int, name: str, study_uid: str = STUDY_UID, description: str = "") -> list[Path]:
    """``count`` CT_small copies as one new series (new Series and SOP Instance UIDs) of ``study_uid``."""
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    series_uid = generate_uid(entropy_srcs=[str(folder), name])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = source.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber, ds.SeriesNumber = index + 1, 7
        if description:
            ds.SeriesDescription = description
        path = folder / f"{name}-{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(paths: list[Path], port: int, ae_title: str = SENDER_AE, called: str = "MEDCLEAR",
         on_status: Callable[[int, int], object] | None = None, tls=None) -> dict[Path, int]:
    """C-STORE ``paths`` over one association; status per path (-1: no answer). ``on_status(index,
    status)`` runs after each answer (a test may kill the node there); if it returns True the
    association is aborted and sending stops."""
    metas = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in paths}
    syntaxes: dict[str, set[str]] = {}
    for ds in metas.values():
        syntaxes.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    contexts = [build_context(cls, sorted(found)) for cls, found in syntaxes.items()]
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title=called, tls_args=tls)
    statuses = dict.fromkeys(paths, -1)
    if not assoc.is_established:
        return statuses
    try:
        for index, path in enumerate(paths):
            if not assoc.is_established:
                break
            status = assoc.send_c_store(path)
            statuses[path] = int(status.Status) if "Status" in status else -1
            if on_status is not None and on_status(index, statuses[path]):
                assoc.abort()  # the callback stopped the peer (kill -9): do not wait for timeouts
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def echo(port: int, ae_title: str = SENDER_AE, tls=None) -> str:
    """'success', 'rejected' or 'failed' for a C-ECHO association."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDCLEAR", tls_args=tls)
    if assoc.is_rejected:
        return "rejected"
    if not assoc.is_established:
        return "failed"
    status = assoc.send_c_echo()
    assoc.release()
    return "success" if status and status.Status == 0 else "failed"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """``predicate()`` once truthy; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class NodeProcess:
    """``python -m runtime.node ARGS`` in a subprocess; its log in ``log``."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "NodeProcess":
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "runtime.node", *self.args], cwd=REPO, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: "listening as" in self.text()[offset:] or self.process.poll() is not None, timeout,
                 "the node to listen")
        assert self.process.poll() is None, self.text()
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@contextlib.contextmanager
def node_process(args: list[str], log: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(args, log).start()
    try:
        yield node
    finally:
        node.close()


@contextlib.contextmanager
def node_in_process(**settings) -> Iterator[object]:
    """A started runtime.node Node in this process (no signal handling); stopped at the end."""
    from runtime.node.config import build
    from runtime.node.service import Node

    node = Node(build(settings)).start()
    try:
        yield node
    finally:
        node.stop()


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def spool_files(spool: Path, area: str, pattern: str = "*/*.dcm") -> list[Path]:
    return sorted(path for path in (spool / area).glob(pattern) if not path.name.startswith("."))
