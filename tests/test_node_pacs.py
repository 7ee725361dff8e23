"""The DICOM node against a real PACS (Orthanc, loopback only; issue #13).

Orthanc is started by these tests with a temporary config and database (benchmarks/orthanc.py)
and stopped at the end; without Orthanc installed they skip with that reason. The node runs
as a subprocess (so that it can be killed with SIGKILL and stopped with SIGTERM) with the
tiny smoothing model of runtime_fixtures.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from pathlib import Path

import pydicom
import pytest

from benchmarks.orthanc import Orthanc, available, free_port
from node_fixtures import NodeProcess, child_pids, ct_series, running, send, spool_files, wait_for
from runtime.derived import derived_uid
from runtime_fixtures import make_smoothing_model, new_errors

SETTLE = "0.3"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_smoothing_model(tmp_path_factory.mktemp("node-model") / "model.onnx")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """(Orthanc, the port the node listens on): Orthanc knows the node as MEDCLEAR@127.0.0.1:port."""
    reason = available()
    if reason:
        pytest.skip(reason)
    node_port = free_port()
    with Orthanc(tmp_path_factory.mktemp("orthanc"), modalities={"medclear": ("MEDCLEAR", node_port)}) as orthanc:
        yield orthanc, node_port


def node_args(spool: Path, port: int, pacs_port: int, model: Path, *extra: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--spool", str(spool), "--forward",
            f"ORTHANC@127.0.0.1:{pacs_port}", "--model", str(model), "--settle-s", SETTLE, "--retry-base-s", "0.2",
            "--retry-max-s", "1", "--drain-timeout-s", "20", "--journal-segment-mb", "1", *extra]


def model_id(model: Path) -> str:
    from runtime.enhance import derivation_for
    from runtime.pipeline import open_model

    with open_model(model) as backend:
        return derivation_for(backend).model_id


def derived_series_of(orthanc: Orthanc, paths: list[Path], identity: str) -> dict | None:
    series_uid = pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID
    return orthanc.series().get(derived_uid(str(series_uid), identity))


def metric(text: str, name: str) -> float:
    match = re.search(rf"^medclear_node_{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


@pytest.mark.dicom3tools
def test_series_from_orthanc_comes_back_enhanced_and_conformant(pacs, model, tmp_path):
    orthanc, port = pacs
    series = [ct_series(tmp_path / "in", 4, "a", description="CHEST"), ct_series(tmp_path / "in", 3, "b")]
    for path in (p for group in series for p in group):
        orthanc.upload(path.read_bytes())
    http = free_port()
    node = NodeProcess(node_args(tmp_path / "spool", port, orthanc.dicom_port, model, "--allow", "ORTHANC@127.0.0.1",
                                 "--http", f"127.0.0.1:{http}"), tmp_path / "node.log").start()
    try:
        for group in series:  # Orthanc's own Store SCU sends each source series to the node
            uid = pydicom.dcmread(group[0], stop_before_pixels=True).SeriesInstanceUID
            assert orthanc.send_series("medclear", orthanc.series()[uid]["id"])["InstancesCount"] == len(group)
        identity = model_id(model)
        for group in series:
            wait_for(lambda g=group: (derived_series_of(orthanc, g, identity) or {}).get("instances") == len(g), 30,
                     "the derived series in Orthanc")
        scrape = lambda: urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read().decode()
        metrics = wait_for(lambda: (lambda text: text if metric(text, "forwarded_total") == 7 else None)(scrape()),
                           10, "the node to count 7 forwarded")
        health = urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10).read().decode()
        assert node.terminate() == 0
    finally:
        node.close()
    assert health.strip() == "ok"
    assert metric(metrics, "received_total") == metric(metrics, "enhanced_total") == 7
    assert metric(metrics, "forwarded_total") == 7 and metric(metrics, "failed_total") == 0
    assert metric(metrics, "forward_associations_total") == 2  # one association per series, not per image
    assert metric(metrics, "image_seconds_count") == 7
    for group in series:
        found = derived_series_of(orthanc, group, identity)
        assert found["study"] == pydicom.dcmread(group[0]).StudyInstanceUID  # the derived series keeps the study
        assert "medclear enhanced (test-smoothing " in found["description"]
        assert found["description"].startswith("CHEST") == (group is series[0])
        instance = orthanc.get(f"/series/{found['id']}")["Instances"][0]
        out = tmp_path / f"derived-{found['id']}.dcm"
        out.write_bytes(orthanc.get(f"/instances/{instance}/file", raw=True))
        ds = pydicom.dcmread(out)
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        source = next(p for p in group if pydicom.dcmread(p).SOPInstanceUID ==
                      ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
        assert new_errors(source, out) == set()
    log = (tmp_path / "node.log").read_text()
    assert "CHEST" not in log and "Anonymized" not in log  # no patient or series text in the log


def test_kill9_mid_series_twice_loses_nothing_and_duplicates_nothing(pacs, model, tmp_path):
    """Acknowledged instances survive SIGKILL at any moment; the sender re-sends what was not
    acknowledged; every instance arrives exactly once, in one derived series."""
    orthanc, port = pacs
    paths = ct_series(tmp_path / "in", 16, "kill")
    node = NodeProcess(node_args(tmp_path / "spool", port, orthanc.dicom_port, model), tmp_path / "node.log")
    acknowledged: set[Path] = set()
    for kill_at in (4, 3, None):  # kill -9 after the 5th, then the 4th acknowledgement of a (re)send
        node.start()
        todo = [p for p in paths if p not in acknowledged]

        model_processes = child_pids(node.process.pid)

        def answered(index: int, status: int, todo=todo, kill_at=kill_at) -> bool:
            if status == 0:
                acknowledged.add(todo[index])
            if index == kill_at:
                node.kill9()
                return True
            return False

        send(todo, port, on_status=answered)
        if kill_at is not None:
            assert node.process.returncode == -9 and model_processes
            wait_for(lambda: not any(map(running, model_processes)), 10, "the model process to die with the node")
    assert acknowledged == set(paths)
    identity = model_id(model)
    expected = {str(derived_uid(str(pydicom.dcmread(p).SOPInstanceUID), identity)) for p in paths}
    try:
        wait_for(lambda: (derived_series_of(orthanc, paths, identity) or {}).get("instances") == 16, 45,
                 "16 derived instances in Orthanc")
    finally:
        node.close()
    found = derived_series_of(orthanc, paths, identity)
    stored = [orthanc.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"]
              for i in orthanc.get(f"/series/{found['id']}")["Instances"]]
    assert sorted(stored) == sorted(expected)  # every one, once, with its deterministic UID
    assert orthanc.statistics()["CountSeries"] == len(orthanc.series())  # sanity: no stray series
    assert not spool_files(tmp_path / "spool", "failed")


def test_sigterm_drains_the_association_in_progress_and_exits_cleanly(pacs, model, tmp_path):
    orthanc, port = pacs
    paths = ct_series(tmp_path / "in", 20, "term")
    node = NodeProcess(node_args(tmp_path / "spool", port, orthanc.dicom_port, model), tmp_path / "node.log").start()
    codes: list[int] = []

    def answered(index: int, status: int) -> None:
        if index == 4:  # SIGTERM mid-association: the rest of it must still be accepted
            threading.Thread(target=lambda: codes.append(node.terminate())).start()

    try:
        statuses = send(paths, port, on_status=answered)
        wait_for(lambda: codes, 60, "the node to exit")
    finally:
        node.close()
    assert codes == [0], node.text()
    assert set(statuses.values()) == {0}
    log = node.text()
    assert "stopping: draining" in log and "stopped" in log and "Traceback" not in log
    assert not [p for p in (tmp_path / "spool").rglob(".medclear-tmp-*")]
    assert not list((tmp_path / "spool" / "tmp").iterdir())
    identity = model_id(model)
    restarted = NodeProcess(node_args(tmp_path / "spool", port, orthanc.dicom_port, model), tmp_path / "node.log")
    try:  # whatever was not forwarded before the exit is in the spool and goes out now
        restarted.start()
        wait_for(lambda: (derived_series_of(orthanc, paths, identity) or {}).get("instances") == 20, 45,
                 "20 derived instances in Orthanc")
        assert restarted.terminate() == 0
    finally:
        restarted.close()


def test_pacs_down_retries_then_failed_with_reason_and_nothing_lost(model, tmp_path):
    """Forwarding to a PACS that is down: retried with backoff, then failed/ with a one-line
    reason; the node goes on; with the PACS back, --retry-failed delivers every instance."""
    reason = available()
    if reason:
        pytest.skip(reason)
    from node_fixtures import node_in_process

    down, port = free_port(), free_port()
    paths = ct_series(tmp_path / "in", 3, "down")
    settings = dict(spool=tmp_path / "spool", forward=f"PACS@127.0.0.1:{down}", port=port, bind="127.0.0.1",
                    model=model, settle_s=0.1, max_attempts=3, retry_base_s=0.05, retry_max_s=0.2, timeout_s=5)
    with node_in_process(**settings) as node:
        assert set(send(paths, port).values()) == {0}
        wait_for(lambda: len(spool_files(tmp_path / "spool", "failed")) == 3 and node.metrics.counters["failed"] == 3,
                 30, "3 instances in failed/ and counted")
        assert node.health() is None  # the node goes on
        metrics = node.metrics.render()
    assert metric(metrics, "forward_retries_total") == 6 and metric(metrics, "failed_total") == 3
    assert metric(metrics, "forwarded_total") == 0
    for path in spool_files(tmp_path / "spool", "failed"):
        lines = path.with_name(path.name + ".reason").read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("forwarding failed after 3 attempt(s): cannot associate with PACS@")
    with Orthanc(tmp_path / "orthanc", ae_title="PACS", dicom_port=down,
                 modalities={"medclear": ("MEDCLEAR", port)}) as orthanc:
        with node_in_process(**settings, retry_failed=True):
            identity = model_id(model)
            wait_for(lambda: (derived_series_of(orthanc, paths, identity) or {}).get("instances") == 3, 30,
                     "the failed instances delivered after --retry-failed")
    assert not spool_files(tmp_path / "spool", "failed") and not spool_files(tmp_path / "spool", "outgoing")


def test_unsupported_objects_are_accepted_and_forwarded_unchanged_with_forward_original(pacs, model, tmp_path):
    from node_fixtures import node_in_process
    from runtime_fixtures import copy_file

    orthanc, port = pacs
    others = [copy_file(name, tmp_path / "in") for name in ("test-SR.dcm", "rtplan.dcm", "SC_rgb.dcm")]
    ct = ct_series(tmp_path / "in", 2, "with-originals")
    settings = dict(spool=tmp_path / "spool", forward=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", port=port,
                    bind="127.0.0.1", model=model, settle_s=0.1)
    with node_in_process(**settings, forward_original=True) as node:
        assert set(send(others + ct, port).values()) == {0}
        uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in others + ct}
        wait_for(lambda: uids <= set(orthanc.instance_uids()), 30, "the originals in Orthanc")
        wait_for(lambda: (derived_series_of(orthanc, ct, model_id(model)) or {}).get("instances") == 2, 30,
                 "the derived CT series")
        assert node.health() is None
        counts = node.metrics.counters
    assert counts["unsupported"] == 3 and counts["enhanced"] == 2 and counts["forwarded"] == 2 + 5
