"""python -m benchmarks.node: the DICOM node end to end, against dcmtk and a real PACS (issue #13).

On this machine, loopback only:

1. ``--instances`` CT instances (``--series`` series of one study; copies of the shipped
   512x512 sample with new UIDs) are made.
2. Receive throughput: dcmtk's ``storescu`` sends them all to dcmtk's ``storescp`` (which only
   writes files), then to the node (which journals each instance durably before answering,
   while it enhances and forwards what it received); the ratio of the two sending times, in
   one run. Beside it, what bounds that ratio: the same sending to a bare pynetdicom Store SCP
   that answers Success and keeps nothing (pynetdicom's own PDU and DIMSE handling), and the
   node's durable write of one instance timed alone on the same disk: the journal append on
   the acknowledgement path (write + fdatasync into a preallocated segment) and the direct
   write it replaced (``Spool.receive``: write, fdatasync, rename, folder fsync). Then an A/B
   of receiving alone (the node forwarding nowhere), rounds alternating storescp, the node
   with its journal and the node with ``--no-journal``.
3. Clean run: Orthanc (a fresh temporary one) receives the node's derived series; the
   end-to-end rate is instances / (first send to the last derived instance in Orthanc). The
   CLI's rate on the same files (``python -m runtime.enhance DIR -o OUT``, wall time with
   its model load) stands beside it.
4. Kill run: the same with the node ``kill -9``ed ``--kills`` times mid-stream (once it has
   received a share of the instances) and restarted; storescu re-sends from the first
   instance not acknowledged. Every derived instance must arrive in Orthanc exactly once, in
   the right derived series (checked by UID: the expected derived UIDs are a function of the
   source UIDs and the model).

Writes a JSON record (``--record``) and prints its Markdown; ``--into DOC`` writes it between
``<!-- node:begin/end -->`` markers (docs/BENCHMARKS.md). ``--receive-only`` measures step 2
alone (the node forwarding nowhere) and prints it, for development; it writes no record.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from benchmarks.markdown import md_table, write_marked_section
from benchmarks.orthanc import Orthanc, available, free_port
from benchmarks.record import file_record, header, write_json
from runtime.derived import derived_uid
from runtime.node.journal import SEGMENT_BYTES
from runtime.node.receiver import MAX_PDU
from runtime.node.spool import Spool, digest, series_key

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "ct_quarter_dose.dcm"
SECTION = "node"
RECORD = REPO / "benchmarks" / "node_record.json"


def make_instances(folder: Path, count: int, series: int) -> list[Path]:
    """``count`` copies of the sample CT with new UIDs, ``series`` series of one study, in send order."""
    source = pydicom.dcmread(SAMPLE)
    study = generate_uid(entropy_srcs=["medclear node benchmark", "study"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        number = index * series // count
        ds = source.copy()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["medclear node benchmark", "series", str(number)])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["medclear node benchmark", "instance", str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber = number + 1, index + 1
        ds.SeriesDescription = f"node benchmark series {number + 1}"
        path = folder / f"s{number + 1:02d}-{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dcmtk_env(nodelay: bool) -> dict[str, str]:
    """dcmtk's environment: TCP_NODELAY=1 turns Nagle's algorithm off, which dcmtk leaves on by
    default (then every C-STORE waits ~40 ms for a delayed ACK on loopback)."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    return {**env, "TCP_NODELAY": "1"} if nodelay else env


def storescu(files: list[Path], port: int, called: str, nodelay: bool = True) -> tuple[float, int, int]:
    """(seconds, acknowledged, exit code): dcmtk's storescu sends ``files`` in order over one
    association; ``acknowledged`` counts the leading files answered Success."""
    start = time.perf_counter()
    result = subprocess.run(["storescu", "-v", "-aet", "SCANNER", "-aec", called, "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, env=dcmtk_env(nodelay))
    seconds = time.perf_counter() - start
    answers = re.findall(r"Received Store Response(?: \(([^)]*)\))?", result.stdout + result.stderr)
    acknowledged = 0
    for answer in answers:
        if answer != "Success":
            break
        acknowledged += 1
    return seconds, acknowledged, result.returncode


def storescp_receive(files: list[Path], folder: Path, nodelay: bool) -> float:
    """Seconds storescu needs to send ``files`` to dcmtk's storescp (writing them to ``folder``)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(["storescp", "-dhl", "-aet", "STORESCP", "--output-directory", str(folder), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env(nodelay))
    try:
        _wait_port(port)
        seconds, acknowledged, code = storescu(files, port, "STORESCP", nodelay)
        if acknowledged != len(files):
            raise RuntimeError(f"storescp acknowledged {acknowledged} of {len(files)} (storescu exit {code})")
        return seconds
    finally:
        server.terminate()
        server.wait(30)


def pynetdicom_floor(files: list[Path]) -> float:
    """Seconds storescu needs to send ``files`` to a bare pynetdicom Store SCP (set up as the
    node's) that answers Success and keeps nothing: a floor for any node built on pynetdicom."""
    ae = AE(ae_title="FLOOR")
    ae.maximum_pdu_size = MAX_PDU
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    try:
        seconds, acknowledged, code = storescu(files, server.server_address[1], "FLOOR")
    finally:
        server.shutdown()
    if acknowledged != len(files):
        raise RuntimeError(f"the bare SCP acknowledged {acknowledged} of {len(files)} (storescu exit {code})")
    return seconds


def durable_writes_ms(sample: Path, folder: Path, count: int = 100, rounds: int = 5) -> dict[str, float]:
    """Milliseconds one instance's durable write takes alone: the journal append the node
    acknowledges after (write + fdatasync into a preallocated segment) and the direct write
    into incoming/ (``Spool.receive``: temporary file, fdatasync, rename, folder fsync), in
    alternating blocks of ``count // rounds``."""
    data = sample.read_bytes()
    seconds = {"journal_append_ms_per_instance": 0.0, "direct_write_ms_per_instance": 0.0}
    for folder_ in (folder / "journal", folder / "direct"):
        shutil.rmtree(folder_, ignore_errors=True)
    journaled = Spool(folder / "journal", limit_bytes=2**62, journal_segment_bytes=SEGMENT_BYTES).open()
    direct = Spool(folder / "direct", limit_bytes=2**62).open()
    try:
        for block in range(rounds):
            for index in range(block * (count // rounds), (block + 1) * (count // rounds)):
                start = time.perf_counter()
                journaled.journal.append(series_key("1.2.3"), digest(f"1.2.3.{index}"), [data])
                seconds["journal_append_ms_per_instance"] += time.perf_counter() - start
                start = time.perf_counter()
                direct.receive("1.2.3", f"1.2.3.{index}", data)
                seconds["direct_write_ms_per_instance"] += time.perf_counter() - start
    finally:
        journaled.close()
        direct.close()
        shutil.rmtree(folder, ignore_errors=True)
    done = rounds * (count // rounds)
    return {name: round(total / done * 1000, 2) for name, total in seconds.items()}


class Node:
    """``python -m runtime.node`` as a subprocess (restartable, killable)."""

    def __init__(self, spool: Path, port: int, http: int, forward: str, log: Path, model: str | None,
                 *extra: str) -> None:
        self.args = ["--port", str(port), "--bind", "127.0.0.1", "--spool", str(spool), "--forward", forward,
                     "--http", f"127.0.0.1:{http}", "--settle-s", "1", *extra] + (["--model", model] if model else [])
        self.port, self.http, self.log = port, http, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "runtime.node", *self.args], cwd=REPO,
                                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log,
                                            stderr=subprocess.STDOUT)
        _wait_port(self.port, self.process)

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=10).read().decode()
        match = re.search(rf"^medclear_node_{name} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


def _wait_port(port: int, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def model_identity(model: str | None) -> tuple[str, str]:
    """(model id used in derived UIDs, description) of the model the node will open."""
    from runtime.enhance import derivation_for
    from runtime.pipeline import open_model

    with open_model(model) as backend:
        return derivation_for(backend).model_id, f"{backend.model_path.name} ({backend.describe()})"


def node_run(files: list[Path], work: Path, name: str, kills: int, model: str | None, identity: str,
             timeout: float, nodelay: bool = True) -> dict:
    """Send ``files`` to a fresh node forwarding to a fresh Orthanc, kill -9 it ``kills`` times
    mid-stream; what arrived, and how fast."""
    port, http = free_port(), free_port()
    folder = work / name
    with Orthanc(folder / "orthanc", modalities={"medclear": ("MEDCLEAR", port)}) as orthanc:
        node = Node(folder / "spool", port, http, f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", folder / "node.log", model)
        node.start()
        start = time.perf_counter()
        receive_seconds, sends, todo = 0.0, 0, list(files)
        for kill in range(kills + 1):
            if kill < kills:  # kill -9 once this run of the node has received a share of the rest
                seconds, acknowledged = _send_and_kill(todo, node, max(1, len(todo) // (kills + 2)))
            else:
                seconds, acknowledged, _ = storescu(todo, port, "MEDCLEAR", nodelay)
            sends += 1
            receive_seconds += seconds
            todo = todo[acknowledged:]
            if kill < kills:
                node.start()
        if todo:
            raise RuntimeError(f"{len(todo)} instances were never acknowledged")
        expected = _expected(files, identity)
        arrived = _wait_arrival(orthanc, expected, timeout)
        end_to_end = time.perf_counter() - start
        code = node.stop()
        statistics = orthanc.statistics()
    series_found = {uid: info["instances"] for uid, info in arrived.items()}
    wanted = {}
    for sop, series in expected.values():
        wanted[series] = wanted.get(series, 0) + 1
    return {
        "instances": len(files), "kills": kills, "sends": sends, "receive_seconds": round(receive_seconds, 3),
        "end_to_end_seconds": round(end_to_end, 3),
        "end_to_end_images_per_second": round(len(files) / end_to_end, 2),
        "derived_instances_in_pacs": statistics["CountInstances"],
        "derived_series_in_pacs": statistics["CountSeries"],
        "every_series_complete": series_found == wanted,
        "exit_code_after_sigterm": code,
    }


def _send_and_kill(files: list[Path], node: Node, share: int) -> tuple[float, int]:
    """storescu ``files`` to the node and kill -9 the node once it received ``share`` of them."""
    start = time.perf_counter()
    process = subprocess.Popen(["storescu", "-v", "-aet", "SCANNER", "-aec", "MEDCLEAR", "127.0.0.1",
                                str(node.port), *map(str, files)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=dcmtk_env(True))
    while node.metric("received_total") < share and process.poll() is None:
        time.sleep(0.02)
    node.kill9()
    output, _ = process.communicate(timeout=120)
    seconds = time.perf_counter() - start
    acknowledged = 0
    for answer in re.findall(r"Received Store Response(?: \(([^)]*)\))?", output):
        if answer != "Success":
            break
        acknowledged += 1
    return seconds, acknowledged


def _expected(files: list[Path], identity: str) -> dict[str, tuple[str, str]]:
    """source SOP UID -> (derived SOP UID, derived series UID)."""
    out = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = (str(derived_uid(str(ds.SOPInstanceUID), identity)),
                                       str(derived_uid(str(ds.SeriesInstanceUID), identity)))
    return out


def _wait_arrival(orthanc: Orthanc, expected: dict[str, tuple[str, str]], timeout: float) -> dict:
    """Orthanc's series once it holds as many instances as expected (or the timeout passed);
    raises if any stored instance is not an expected derived instance in its expected series."""
    deadline = time.monotonic() + timeout
    while orthanc.statistics()["CountInstances"] < len(expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # anything extra (a duplicate, a stray series) would arrive now
    wanted = {sop: series for sop, series in expected.values()}
    for item in orthanc.get("/instances?expand"):
        sop = item["MainDicomTags"]["SOPInstanceUID"]
        series = orthanc.get(f"/series/{item['ParentSeries']}")["MainDicomTags"]["SeriesInstanceUID"]
        if wanted.get(sop) != series:
            raise RuntimeError("Orthanc holds an instance that is not an expected derived instance of its series")
    return orthanc.series()


def cli_rate(folder: Path, out: Path, model: str | None, count: int) -> dict:
    """``python -m runtime.enhance`` over the same files: wall time, with its model load."""
    command = [sys.executable, "-m", "runtime.enhance", str(folder), "-o", str(out), "-q"]
    command += ["--model", model] if model else []
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ,
                                                                                   "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"runtime.enhance failed: {result.stderr[-500:]}")
    return {"seconds": round(seconds, 3), "images_per_second": round(count / seconds, 2),
            "summary": result.stdout.strip().splitlines()[-1]}


def receive_bounds(files: list[Path], work: Path) -> dict:
    """The bare pynetdicom SCP's sending time and the durable writes alone (see the module's docstring)."""
    floor = pynetdicom_floor(files)
    return {"bare_pynetdicom_scp_seconds": round(floor, 3), **durable_writes_ms(files[0], work / "durable")}


def node_receive_seconds(files: list[Path], work: Path, model: str | None, *extra: str) -> float:
    """Seconds storescu needs to send ``files`` to a fresh node that forwards nowhere (enhancing
    meanwhile); the node is killed afterwards (its spool is thrown away)."""
    shutil.rmtree(work / "ab", ignore_errors=True)
    (work / "ab").mkdir(parents=True)
    node = Node(work / "ab" / "spool", free_port(), free_port(), f"NOWHERE@127.0.0.1:{free_port()}",
                work / "ab" / "node.log", model, *extra)
    node.start()
    try:
        seconds, acknowledged, code = storescu(files, node.port, "MEDCLEAR")
    finally:
        node.kill9()
    if acknowledged != len(files):
        raise RuntimeError(f"the node{' ' + ' '.join(extra) if extra else ''} acknowledged {acknowledged} of "
                           f"{len(files)} (storescu exit {code})")
    return seconds


def journal_ab(files: list[Path], work: Path, model: str | None, rounds: int) -> dict:
    """Receiving alone, ``rounds`` rounds of storescp, the node, the node with --no-journal (in
    that order each round): milliseconds per instance, and the medians' ratios to storescp."""
    times: dict[str, list[float]] = {"storescp": [], "journal": [], "no_journal": []}
    for _ in range(rounds):
        times["storescp"].append(storescp_receive(files, work / "storescp", nodelay=True))
        times["journal"].append(node_receive_seconds(files, work, model))
        times["no_journal"].append(node_receive_seconds(files, work, model, "--no-journal"))
    per_instance = {name: [round(value / len(files) * 1000, 2) for value in values] for name, values in times.items()}
    medians = {name: statistics.median(values) for name, values in per_instance.items()}
    return {"rounds": rounds, "ms_per_instance": per_instance,
            "median_ms_per_instance": {name: round(value, 2) for name, value in medians.items()},
            "median_ratio": {name: round(medians[name] / medians["storescp"], 2) for name in ("journal", "no_journal")}}


def receive_only(args: argparse.Namespace) -> None:
    """Step 2 alone, printed: storescp, the bare pynetdicom SCP, the durable writes, then the
    node with and without its journal (forwarding nowhere), ``--rounds`` rounds."""
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    files = make_instances(work / "in", args.instances, args.series)
    storescp_seconds = storescp_receive(files, work / "storescp", nodelay=True)
    bounds = receive_bounds(files, work)
    n = len(files)
    print(f"{n} instances, load average {os.getloadavg()[0]:.2f}: storescp {storescp_seconds / n * 1000:.2f} ms, "
          f"bare pynetdicom SCP {bounds['bare_pynetdicom_scp_seconds'] / n * 1000:.2f} ms per instance; "
          f"durable write alone: journal append {bounds['journal_append_ms_per_instance']:.2f} ms, direct "
          f"{bounds['direct_write_ms_per_instance']:.2f} ms", flush=True)
    ab = journal_ab(files, work, args.model, args.rounds)
    for index in range(args.rounds):
        row = {name: values[index] for name, values in ab["ms_per_instance"].items()}
        print(f"round {index + 1}: storescp {row['storescp']:.2f} ms, node {row['journal']:.2f} ms (ratio "
              f"{row['journal'] / row['storescp']:.2f}), node --no-journal {row['no_journal']:.2f} ms (ratio "
              f"{row['no_journal'] / row['storescp']:.2f}) per instance")
    print(f"medians: ratio {ab['median_ratio']['journal']:.2f} with the journal, "
          f"{ab['median_ratio']['no_journal']:.2f} with --no-journal; load average {os.getloadavg()[0]:.2f}")


def run(args: argparse.Namespace) -> dict:
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    files = make_instances(work / "in", args.instances, args.series)
    identity, model_text = model_identity(args.model)
    storescp_seconds = storescp_receive(files, work / "storescp", nodelay=True)
    storescp_nagle = storescp_receive(files, work / "storescp", nodelay=False)
    bounds = receive_bounds(files, work)
    ab = journal_ab(files, work, args.model, args.rounds)
    clean = node_run(files, work, "clean", 0, args.model, identity, args.timeout)
    nagle = node_run(files, work, "nagle", 0, args.model, identity, args.timeout, nodelay=False)
    killed = node_run(files, work, "killed", args.kills, args.model, identity, args.timeout)
    cli = cli_rate(work / "in", work / "cli", args.model, len(files))
    return {
        **header("node", {"instances": args.instances, "series": args.series, "rounds": args.rounds,
                          "kills": args.kills}),
        "model_file": file_record(args.model) if args.model and Path(args.model).is_file() else None,
        "tools": {"orthanc": _version(["Orthanc", "--version"]), "dcmtk": _version(["storescu", "--version"])},
        "load_average_at_start": round(os.getloadavg()[0], 2),  # other work on the machine skews every row
        "model": model_text, "instances": args.instances, "series": args.series,
        "image": "512x512 CT (samples/ct_quarter_dose.dcm with new UIDs), Explicit VR Little Endian",
        "storescp_receive_seconds": round(storescp_seconds, 3),
        "node_receive_seconds": clean["receive_seconds"],
        "receive_ratio": round(clean["receive_seconds"] / storescp_seconds, 2),
        "receive_bounds": {**bounds, "bare_pynetdicom_scp_ratio": round(bounds["bare_pynetdicom_scp_seconds"] /
                                                                        storescp_seconds, 2)},
        "dcmtk_default": {"storescp_receive_seconds": round(storescp_nagle, 3),
                          "node_receive_seconds": nagle["receive_seconds"],
                          "receive_ratio": round(nagle["receive_seconds"] / storescp_nagle, 2),
                          "node_run": nagle},
        "journal_ab": ab,
        "clean": clean, "killed": killed, "cli": cli,
    }


def _version(command: list[str]) -> str:
    try:
        text = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "not installed"
    line = text.strip().splitlines()[0] if text.strip() else "unknown"
    return line.replace("$dcmtk: ", "").rstrip("$ ").strip()  # dcmtk prints "$dcmtk: storescu v3.6.7 ... $"


def markdown(record: dict) -> str:
    machine = record["machine"]
    clean, killed, cli = record["clean"], record["killed"], record["cli"]
    n, default, bounds = record["instances"], record["dcmtk_default"], record["receive_bounds"]
    ab = record["journal_ab"]
    medians, ratios = ab["median_ms_per_instance"], ab["median_ratio"]
    rows = [
        ["receive, TCP_NODELAY=1: storescu -> storescp (writes files, no fsync)",
         f"{record['storescp_receive_seconds']:.2f} s", f"{n / record['storescp_receive_seconds']:.0f} images/s", ""],
        ["receive, TCP_NODELAY=1: storescu -> node (journaled durably per instance, enhancing meanwhile)",
         f"{record['node_receive_seconds']:.2f} s", f"{n / record['node_receive_seconds']:.0f} images/s",
         f"**{record['receive_ratio']:.2f}x** storescp's time"],
        ["bound: storescu -> bare pynetdicom SCP (answers Success, keeps nothing)",
         f"{bounds['bare_pynetdicom_scp_seconds']:.2f} s", f"{n / bounds['bare_pynetdicom_scp_seconds']:.0f} images/s",
         f"{bounds['bare_pynetdicom_scp_ratio']:.2f}x storescp's time"],
        ["bound: the node's durable write of one instance alone: journal append (write, fdatasync)",
         f"{bounds['journal_append_ms_per_instance']:.2f} ms", "", "per instance"],
        ["the direct write it replaced, alone (write, fdatasync, rename, folder fsync; now off the ack path)",
         f"{bounds['direct_write_ms_per_instance']:.2f} ms", "", "per instance"],
        [f"receive A/B, forwarding nowhere, median of {ab['rounds']} alternating rounds: storescp",
         f"{medians['storescp']:.2f} ms", f"{1000 / medians['storescp']:.0f} images/s", "per instance"],
        ["receive A/B: node with its journal (the default)", f"{medians['journal']:.2f} ms",
         f"{1000 / medians['journal']:.0f} images/s", f"{ratios['journal']:.2f}x storescp's time"],
        ["receive A/B: node --no-journal (acknowledges after the direct write)", f"{medians['no_journal']:.2f} ms",
         f"{1000 / medians['no_journal']:.0f} images/s", f"{ratios['no_journal']:.2f}x storescp's time"],
        ["receive, dcmtk defaults (Nagle on): storescu -> storescp", f"{default['storescp_receive_seconds']:.2f} s",
         f"{n / default['storescp_receive_seconds']:.0f} images/s", ""],
        ["receive, dcmtk defaults (Nagle on): storescu -> node", f"{default['node_receive_seconds']:.2f} s",
         f"{n / default['node_receive_seconds']:.0f} images/s", f"{default['receive_ratio']:.2f}x storescp's time"],
        ["end to end: storescu -> node -> Orthanc, clean", f"{clean['end_to_end_seconds']:.1f} s",
         f"{clean['end_to_end_images_per_second']:.2f} images/s",
         f"{clean['derived_instances_in_pacs']} derived in {clean['derived_series_in_pacs']} series"],
        [f"end to end, node kill -9ed {killed['kills']}x mid-stream and restarted",
         f"{killed['end_to_end_seconds']:.1f} s", f"{killed['end_to_end_images_per_second']:.2f} images/s",
         f"{killed['derived_instances_in_pacs']} derived in {killed['derived_series_in_pacs']} series, "
         f"{killed['sends']} sends"],
        ["CLI: python -m runtime.enhance DIR (wall, with model load)", f"{cli['seconds']:.1f} s",
         f"{cli['images_per_second']:.2f} images/s", ""],
    ]
    complete = all(run["every_series_complete"] for run in (clean, killed, default["node_run"]))
    return "\n".join([
        f"{record['instances']} instances in {record['series']} series ({record['image']}); model "
        f"{record['model']}; {machine['cpu']}, {machine['usable_cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}; load average {record['load_average_at_start']} at the start; "
        f"{record['tools']['orthanc']}; dcmtk {record['tools']['dcmtk']}.",
        "",
        md_table(["what", "time", "rate", "note"], rows),
        "",
        f"Every derived series complete in Orthanc, each instance once with its expected UID: "
        f"{'yes' if complete else 'NO'} (all three node runs); node exit code after SIGTERM: "
        f"{clean['exit_code_after_sigterm']}, {default['node_run']['exit_code_after_sigterm']}, "
        f"{killed['exit_code_after_sigterm']}.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--kills", type=int, default=2, help="kill -9s in the kill run (default 2)")
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "node-benchmark", help="scratch folder")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for all derived instances")
    parser.add_argument("--record", type=Path, default=RECORD, help=f"JSON record to write (default {RECORD})")
    parser.add_argument("--into", type=Path, help="write the Markdown between <!-- node:begin/end --> in this file")
    parser.add_argument("--receive-only", action="store_true", help="measure receiving alone, print it, no record")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of the receive A/B: storescp, node, node --no-journal (default 2)")
    args = parser.parse_args(argv)
    reason = available()
    if reason or shutil.which("storescu") is None or shutil.which("storescp") is None:
        raise SystemExit(f"benchmarks.node: {reason or 'dcmtk (storescu, storescp) is not installed'}")
    if args.receive_only:
        receive_only(args)
        return 0
    record = run(args)
    write_json(record, args.record)
    text = markdown(record)
    print(text)
    if args.into is not None:
        write_marked_section(args.into, text, SECTION)
    runs = (record["clean"], record["killed"], record["dcmtk_default"]["node_run"])
    return 0 if all(run["every_series_complete"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
