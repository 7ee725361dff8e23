"""The DICOM node without a PACS (issue #13): settings, access control, TLS, back-pressure,
what is not enhanced, /healthz and /metrics, the spool, and the service units.

The node runs in this process (``node_fixtures.node_in_process``) with the tiny smoothing
model; forwarding goes to a port where nothing listens unless a test says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from benchmarks.orthanc import free_port
from node_fixtures import ct_series, echo, node_in_process, send, spool_files, wait_for
from runtime.node.__main__ import build_parser, settings_from
from runtime.node.config import Allowed, ConfigError, Destination, build, load_file
from runtime.node.spool import Spool
from runtime_fixtures import REPO, copy_file, make_smoothing_model

OUT_OF_RESOURCES = 0xA700


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_smoothing_model(tmp_path_factory.mktemp("node-model") / "model.onnx")


def settings(tmp_path: Path, model: Path, **extra) -> dict:
    """A node on a free loopback port forwarding to a port where nothing listens; 1 MiB journal
    segments (the node's rotates while a test sends a few dozen instances)."""
    return {"spool": tmp_path / "spool", "forward": f"PACS@127.0.0.1:{free_port()}", "port": free_port(),
            "bind": "127.0.0.1", "model": model, "settle_s": 0.1, "retry_base_s": 30, "journal_segment_mb": 1,
            **extra}


# --- settings -------------------------------------------------------------------------------


def test_config_file_toml_and_json_with_command_line_overrides(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text('spool = "spool"\nforward = "PACS@pacs.example:104"\nport = 104\n'
                    'allow = ["CT1", "MR1@10.1.2.0/24"]\nforward-original = true\nspool_limit_mb = 512\n')
    args = build_parser().parse_args(["--config", str(toml), "--port", "11112", "--allow", "CT2"])
    config = settings_from(args)
    assert config.spool == tmp_path / "spool"  # relative to the file's folder
    assert config.forward == Destination("PACS", "pacs.example", 104)
    assert config.port == 11112 and config.forward_original and config.spool_limit_bytes == 512 * 2**20
    assert [str(rule) for rule in config.allow] == ["CT2"]  # the command line wins
    assert config.journal and config.journal_segment_bytes == 64 * 2**20  # the default: receive through the journal
    assert not settings_from(build_parser().parse_args(["--config", str(toml), "--no-journal"])).journal_segment_bytes
    json_file = tmp_path / "node.json"
    json_file.write_text(json.dumps({"spool": "/var/spool/medclear", "forward": "PACS@10.0.0.5:4242",
                                     "http": "127.0.0.1:9102"}))
    config = settings_from(build_parser().parse_args(["--config", str(json_file)]))
    assert config.spool == Path("/var/spool/medclear") and config.http == ("127.0.0.1", 9102)


@pytest.mark.parametrize(("settings_", "message"), [
    ({"spool": "s"}, "--forward is required"),
    ({"spool": "s", "forward": "PACS@host"}, "is not AE@HOST:PORT"),
    ({"spool": "s", "forward": "A_TITLE_LONGER_THAN_16@h:1"}, "is not an AE title"),
    ({"spool": "s", "forward": "P@h:70000"}, "outside 0-65535"),
    ({"spool": "s", "forward": "P@h:1", "allow": ["BAD\\AE"]}, "is not an AE title"),
    ({"spool": "s", "forward": "P@h:1", "spool_limit_mb": 0}, "must be >= 1"),
    ({"spool": "s", "forward": "P@h:1", "tls_cert": "c.pem"}, "go together"),
    ({"spool": "s", "forward": "P@h:1", "no_such": 1}, "unknown setting(s): no_such"),
    ({"spool": "s", "forward": "P@h:1", "forward_original": "yes"}, "expected true or false"),
    ({"spool": "s", "forward": "P@h:1", "strength": 9}, "--strength"),
    ({"spool": "s", "forward": "P@h:1", "journal": "no"}, "--journal: expected true or false"),
    ({"spool": "s", "forward": "P@h:1", "journal_segment_mb": 0}, "--journal-segment-mb: must be >= 1"),
])
def test_bad_settings_are_one_line_errors(settings_, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(settings_)


def test_command_line_usage_errors_exit_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "runtime.node", "--spool", str(tmp_path), "--forward", "nope"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["medclear-node: error: --forward: 'nope' is not AE@HOST:PORT"]
    bad = tmp_path / "bad.toml"
    bad.write_text("spool = \n")
    result = subprocess.run([sys.executable, "-m", "runtime.node", "--config", str(bad)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "is not valid TOML" in result.stderr


def test_help_documents_the_interface():
    text = build_parser().format_help()
    for option in ("--port", "--ae-title", "--spool", "--forward", "--allow", "--forward-original", "--model",
                   "--backend", "--http", "--config", "--tls-cert", "--spool-limit-mb", "--max-attempts",
                   "--retry-failed"):
        assert option in text, option
    assert "fsynced" in text and "Out of" in text and "SIGTERM" in text


def test_allowed_rules_match_title_and_host():
    assert Allowed.parse("CT1").permits("CT1", "192.0.2.7")
    assert not Allowed.parse("CT1").permits("CT2", "192.0.2.7")
    assert Allowed.parse("CT1@192.0.2.0/24").permits("CT1 ", "192.0.2.7")
    assert not Allowed.parse("CT1@192.0.2.0/24").permits("CT1", "198.51.100.1")
    assert Allowed.parse("CT1@127.0.0.1").permits("CT1", "::ffff:127.0.0.1")
    assert Allowed.parse("CT1@localhost").permits("CT1", "127.0.0.1")


# --- access control, TLS --------------------------------------------------------------------


def test_a_calling_ae_title_not_allowed_is_rejected_at_association_and_logged(model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="medclear.node")
    with node_in_process(**settings(tmp_path, model, allow=["SCANNER", "CT2@192.0.2.1"])) as node:
        port = node.receiver.port
        assert echo(port, "INTRUDER") == "rejected"
        assert echo(port, "CT2") == "rejected"  # allowed only from another host
        assert echo(port, "SCANNER") == "success"
        statuses = send(ct_series(tmp_path / "in", 1, "x"), port, ae_title="INTRUDER")
        assert set(statuses.values()) == {-1}
        assert node.metrics.counters["rejected_associations"] == 3 and node.metrics.counters["received"] == 0
    lines = [r.getMessage() for r in caplog.records if "rejected association" in r.getMessage()]
    assert lines[0] == "rejected association from calling AE 'INTRUDER' at 127.0.0.1: not in --allow"
    assert not spool_files(tmp_path / "spool", "incoming")


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_receive_and_forward(model, tmp_path):
    """--tls-cert/--tls-key: TLS only; a plain caller fails. --forward-tls to a TLS node."""
    cert, key = _certificate(tmp_path, "node")
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cert)
    first = settings(tmp_path / "a", model, tls_cert=cert, tls_key=key)
    with node_in_process(**first) as receiving:
        port = receiving.receiver.port
        assert echo(port, tls=(client, "127.0.0.1")) == "success"
        assert echo(port) == "failed"
        second = settings(tmp_path / "b", model, forward=f"MEDCLEAR@127.0.0.1:{port}", forward_tls=True,
                          forward_tls_ca=cert)
        with node_in_process(**second) as sending:  # node b forwards over TLS to node a
            assert set(send(ct_series(tmp_path / "in", 2, "tls"), sending.receiver.port).values()) == {0}
            wait_for(lambda: receiving.metrics.counters["received"] == 2, 30, "node a to receive over TLS")


# --- back-pressure, unsupported objects ------------------------------------------------------


def test_spool_over_its_limit_answers_out_of_resources_and_does_not_grow(model, tmp_path):
    paths = ct_series(tmp_path / "in", 40, "flood")  # 40 x 39 KB, and the derived copies: over 1 MiB
    with node_in_process(**settings(tmp_path, model, spool_limit_mb=1, min_free_mb=0)) as node:
        statuses = send(paths, node.receiver.port)
        assert statuses[paths[0]] == 0 and OUT_OF_RESOURCES in statuses.values()
        assert set(statuses.values()) == {0, OUT_OF_RESOURCES}
        wait_for(lambda: node.materializer.idle and node.worker.queue.empty() and not node.worker.busy, 30,
                 "the materializer and the worker to finish")
        used = node.spool.used_bytes
        actual = sum(p.stat().st_size for area in ("incoming", "outgoing") for p in spool_files(tmp_path / "spool", area))
        accepted = sum(1 for status in statuses.values() if status == 0)
        assert node.metrics.counters["refused"] == 40 - accepted
        assert "medclear_node_spool_bytes" in node.metrics.render()
    assert used == actual and used < 2**20 + 2 * 40_000  # within one instance (+ its derived copy) of the limit


def test_non_images_and_colour_images_are_accepted_logged_and_not_forwarded(model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="medclear.node")
    others = [copy_file(name, tmp_path / "in") for name in ("test-SR.dcm", "rtplan.dcm", "SC_rgb.dcm")]
    with node_in_process(**settings(tmp_path, model)) as node:
        assert set(send(others, node.receiver.port).values()) == {0}
        wait_for(lambda: node.metrics.counters["unsupported"] == 3, 30, "3 unsupported instances")
        assert node.health() is None
        assert echo(node.receiver.port) == "success"  # and the node goes on
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("not forwarded (--forward-original forwards it unchanged)") == 3
    assert "no pixel data (SR object, not an image)" in text and "not greyscale" in text
    assert not spool_files(tmp_path / "spool", "incoming") and not spool_files(tmp_path / "spool", "outgoing")
    assert not spool_files(tmp_path / "spool", "failed")


def test_a_corrupt_image_goes_to_failed_with_a_reason(model, tmp_path):
    good = ct_series(tmp_path / "in", 1, "ok")[0]
    ds = pydicom.dcmread(good)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.PixelData = ds.PixelData[:100]  # the image is cut short
    bad = tmp_path / "in" / "bad.dcm"
    ds.save_as(bad, enforce_file_format=True)
    with node_in_process(**settings(tmp_path, model)) as node:
        assert set(send([bad, good], node.receiver.port).values()) == {0}
        wait_for(lambda: node.metrics.counters["enhanced"] == 1 and node.metrics.counters["failed"] == 1, 30,
                 "one enhanced, one failed")
    failed = spool_files(tmp_path / "spool", "failed")
    assert len(failed) == 1
    reason = failed[0].with_name(failed[0].name + ".reason").read_text()
    assert reason.startswith("enhancement failed: ") and reason.count("\n") == 1


def test_the_model_runs_in_a_child_process_that_is_restarted_if_it_dies(model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="medclear.node")
    with node_in_process(**settings(tmp_path, model)) as node:
        child = node.worker.model.process
        assert child.is_alive() and child.pid != os.getpid()
        child.kill()  # as the out-of-memory killer would
        wait_for(lambda: node.worker.model.process not in (None, child) and node.worker.model.alive, 60,
                 "a new model process")
        assert set(send(ct_series(tmp_path / "in", 2, "after"), node.receiver.port).values()) == {0}
        wait_for(lambda: node.metrics.counters["enhanced"] == 2, 30, "2 enhanced by the new model process")
        assert node.health() is None and node.metrics.counters["failed"] == 0
        replacement = node.worker.model.process
    assert not replacement.is_alive()  # stopped with the node
    assert "the model process is not running; reopening the model in 0 s" in caplog.text


def test_the_model_child_gives_each_modality_its_model_unless_one_model_is_named(tmp_path, monkeypatch):
    from onnx_fixtures import install_denoisers, write_tiny_onnx

    from runtime.backends import select as select_module
    from runtime.node.enhancer import ModelSettings, _Model

    # Each tiny model covers one modality only: a file sent to the other model would not be enhanced.
    _, mr_model = install_denoisers(monkeypatch, tmp_path / "models")
    both = write_tiny_onnx(tmp_path / "both.onnx", seed=3, model_name="tiny-both", modalities=["CT", "MR"])
    files = {modality: copy_file(f"{modality}_small.dcm", tmp_path / "in") for modality in ("CT", "MR")}

    def models_used(model: _Model, out: Path) -> dict[str, str]:
        """The model named in each enhanced file's Derivation Description, by modality."""
        used = {}
        for modality, path in files.items():
            result = model.enhance(path, out)
            assert result.problem is None and result.output, result
            description = pydicom.dcmread(result.output).DerivationDescription
            used[modality] = re.search(r"with model (\S+)", description).group(1)
        return used

    settings = ModelSettings(model=None, backend="onnxruntime", threads=1, strength=1.0, nice=0)
    model = _Model(settings)
    try:
        assert model.description.startswith("tiny-default, ")
        assert model.description.endswith("; MR files to medclear_student_mr.fp32.onnx (opened on the first)")
        assert len(model.opened) == 1  # the MR model opens on the first MR file
        assert models_used(model, tmp_path / "routed") == {"CT": "tiny-default", "MR": "tiny-mr"}
    finally:
        model.close()

    # An MR model that cannot be opened fails MR files (one line), and CT files go on.
    mr_model.write_bytes(b"not an onnx model")
    model = _Model(settings)
    try:
        broken = model.enhance(files["MR"], tmp_path / "broken")
        assert broken.output is None and not broken.unsupported and "\n" not in broken.problem
        assert broken.problem.startswith("its modality's model medclear_student_mr.fp32.onnx could not be opened: ")
        assert model.enhance(files["CT"], tmp_path / "broken").output
    finally:
        model.close()

    # modality_models beside a named model (engines on a Jetson): MR to its model, the rest to the named one.
    model = _Model(replace(settings, model=both, modality_models=(("MR", mr_model.with_name("mr.onnx")),)))
    write_tiny_onnx(tmp_path / "models" / "mr.onnx", seed=2, model_name="tiny-mr", modalities=["MR"])
    try:
        assert model.description.endswith("; MR files to mr.onnx (opened on the first)")
        assert models_used(model, tmp_path / "beside") == {"CT": "tiny-both", "MR": "tiny-mr"}
    finally:
        model.close()

    # One model for every file: the model setting, or $MEDCLEAR_MODEL.
    for named, env in ((both, None), (None, str(both))):
        if env:
            monkeypatch.setenv(select_module.MODEL_ENV, env)
        model = _Model(replace(settings, model=named))
        try:
            assert model.description.startswith("tiny-both, ") and "MR files" not in model.description
            assert models_used(model, tmp_path / f"one-{env is None}") == {"CT": "tiny-both", "MR": "tiny-both"}
        finally:
            model.close()


# --- operations -------------------------------------------------------------------------------


def test_healthz_and_prometheus_metrics(model, tmp_path):
    with node_in_process(**settings(tmp_path, model, http=f"127.0.0.1:{free_port()}")) as node:
        base = f"http://127.0.0.1:{node.status.port}"
        send(ct_series(tmp_path / "in", 2, "m"), node.receiver.port)
        wait_for(lambda: node.metrics.counters["enhanced"] == 2, 30, "2 enhanced")
        assert urllib.request.urlopen(base + "/healthz", timeout=10).read() == b"ok\n"
        response = urllib.request.urlopen(base + "/metrics", timeout=10)
        text = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/nothing", timeout=10)
        node.worker.stop()
        node.worker.join(10)
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(base + "/healthz", timeout=10)
        assert unhealthy.value.code == 503
    for name in ("received_total 2", "enhanced_total 2", "forwarded_total 0", "failed_total 0", "queue_depth 0",
                 "outgoing_depth 2", 'enhance_seconds_bucket{le="+Inf"} 2', "enhance_seconds_count 2",
                 "image_seconds_count 0"):
        assert f"medclear_node_{name}\n" in text, name
    assert "# TYPE medclear_node_image_seconds histogram" in text


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "direct"])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"])
def test_received_instance_is_spooled_as_sent_behind_its_file_meta(name, journal, tmp_path):
    """The data set is stored byte for byte as it came, in its series' folder, behind File Meta
    Information that pydicom reads back (explicit, implicit, big endian and deflated syntaxes),
    through the journal and directly (--no-journal)."""
    from runtime.node.config import build as build_config
    from runtime.node.materializer import Materializer
    from runtime.node.metrics import Metrics
    from runtime.node.receiver import Receiver
    from runtime.node.spool import series_key

    source = copy_file(name, tmp_path / "in")
    received = []
    spool = Spool(tmp_path / "spool", limit_bytes=10**9, journal_segment_bytes=2**20 if journal else 0).open()
    config = build_config({"spool": tmp_path / "spool", "forward": "PACS@127.0.0.1:1", "port": free_port(),
                           "bind": "127.0.0.1", "min_free_mb": 0})
    materializer = Materializer(spool, lambda path, key, at: received.append(path)) if journal else None
    receiver = Receiver(spool, config, Metrics(dict), lambda path, key: received.append(path),
                        materializer=materializer)
    if materializer is not None:
        materializer.start()
    receiver.start()
    try:
        assert send([source], receiver.port) == {source: 0}
    finally:
        receiver.stop_listening()
        if materializer is not None:
            materializer.stop()
            materializer.join(30)
        spool.close()
    original = pydicom.dcmread(source)
    (path,) = received
    assert path.parent.name == series_key(str(original.SeriesInstanceUID))
    stored = pydicom.dcmread(path)
    meta = stored.file_meta
    assert meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert meta.SourceApplicationEntityTitle == "SCANNER" and meta.FileMetaInformationVersion == b"\0\1"
    assert stored == original  # every element
    if name != "image_dfl.dcm":  # pynetdicom's sender deflates anew, so only the other syntaxes are byte-equal
        assert _dataset_bytes(path) == _dataset_bytes(source)


def _dataset_bytes(path: Path) -> bytes:
    """A DICOM file's data set as encoded: what follows its preamble and File Meta Information
    (128 + 4 bytes, the 12-byte group length element, then as many bytes as it says)."""
    length = pydicom.filereader.read_file_meta_info(path).FileMetaInformationGroupLength
    return path.read_bytes()[128 + 4 + 12 + length:]


def test_spool_resumes_and_counts_what_a_previous_run_left(tmp_path):
    spool = Spool(tmp_path, limit_bytes=10**9).open()
    path = spool.receive("1.2.3", "1.2.3.4", b"x" * 1000)
    (tmp_path / "tmp" / ".medclear-tmp-half").write_bytes(b"never acknowledged")
    spool.close()
    again = Spool(tmp_path, limit_bytes=10**9).open()
    assert again.pending() == [path] and again.used_bytes == 1000
    assert not list((tmp_path / "tmp").iterdir())
    with pytest.raises(RuntimeError, match="another medclear node"):
        Spool(tmp_path, limit_bytes=10**9).open()
    again.close()


def test_forwarding_attempts_survive_a_restart(model, tmp_path):
    """Attempt counts live in the spool: a node restarted (here with --max-attempts 2) goes on
    from the first run's count, so its first attempt is the last one, not attempt 1 again."""
    paths = ct_series(tmp_path / "in", 2, "retry")
    first = settings(tmp_path, model, max_attempts=5, retry_base_s=300, retry_max_s=300)
    with node_in_process(**first) as node:
        assert set(send(paths, node.receiver.port).values()) == {0}
        wait_for(lambda: node.metrics.counters["forward_retries"] == 2 and not node.forwarder.busy, 60,
                 "one failed attempt per instance")
    saved = json.loads((tmp_path / "spool" / "attempts.json").read_text())
    assert sorted(saved.values()) == [1, 1] and all(name.startswith("outgoing/") for name in saved)
    again = {**first, "max_attempts": 2, "port": free_port()}
    with node_in_process(**again) as node:
        wait_for(lambda: node.metrics.counters["failed"] == 2, 30, "both given up on at their 2nd attempt")
        assert node.metrics.counters["forward_retries"] == 0
    failed = spool_files(tmp_path / "spool", "failed")
    assert len(failed) == 2
    for path in failed:
        assert path.with_name(path.name + ".reason").read_text().startswith("forwarding failed after 2 attempt(s)")
    assert json.loads((tmp_path / "spool" / "attempts.json").read_text()) == {}


# --- service units ----------------------------------------------------------------------------

UNITS = [REPO / "deploy" / "medclear-node.service", REPO / "jetson" / "medclear-node.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: str(p.relative_to(REPO)))
def test_service_units_run_the_node_with_options_it_knows(unit, tmp_path):
    text = unit.read_text()
    exec_start = next(line for line in text.replace("\\\n", " ").splitlines() if line.startswith("ExecStart="))
    assert "-m runtime.node" in exec_start and "KillSignal=SIGTERM" in text
    help_text = build_parser().format_help()
    assert all(flag in help_text for flag in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", exec_start))
    config = re.search(r"--config (\S+)", exec_start).group(1)
    example = REPO / unit.parent.name / Path(config).name
    loaded = load_file(example)  # the example config the unit points at is valid
    assert build(loaded).forward.port > 0
    if shutil.which("systemd-analyze") is None:
        return
    copy = tmp_path / unit.name
    copy.write_text(text.replace("/opt/medclear/.venv/bin/python", os.path.realpath(sys.executable)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_benchmark_section_is_what_its_record_renders_to():
    """docs/BENCHMARKS.md's DICOM node numbers come from benchmarks/node_record.json."""
    from benchmarks.markdown import read_marked_section
    from benchmarks.node import RECORD, markdown

    record = json.loads(RECORD.read_text())
    assert read_marked_section(REPO / "docs" / "BENCHMARKS.md", "node") == markdown(record)
    for run in (record["clean"], record["killed"], record["dcmtk_default"]["node_run"]):
        assert run["every_series_complete"] and run["derived_instances_in_pacs"] == record["instances"]
    assert record["killed"]["kills"] == 2 and record["instances"] == 500


def test_config_file_keeps_a_triton_model_url_and_resolves_relative_paths(tmp_path):
    config = tmp_path / "node.json"
    config.write_text('{"model": "grpc://127.0.0.1:8001/medclear", "spool": "spool"}')
    loaded = load_file(config)
    assert loaded["model"] == "grpc://127.0.0.1:8001/medclear"
    assert loaded["spool"] == str(tmp_path.resolve() / "spool")
    # ... and so do the checked settings, from the file or the command line (a Path folds "//").
    built = build({**loaded, "forward": "PACS@127.0.0.1:104"})
    assert built.model == "grpc://127.0.0.1:8001/medclear" and built.spool == tmp_path.resolve() / "spool"
    unknown_user = "~no_such_user_medclear"
    for key, value in (("model", f"{unknown_user}/a.onnx"), ("modality_models", [f"MR={unknown_user}/m.onnx"])):
        with pytest.raises(ConfigError, match="no_such_user_medclear"):  # a one-line error, not a traceback
            build({**loaded, "forward": "PACS@127.0.0.1:104", key: value})


def test_enhancement_waits_while_receiving_until_the_backlog_reaches_receive_first(tmp_path):
    import threading
    import time

    from runtime.node.metrics import Metrics
    from runtime.node.worker import Worker

    config = build({"spool": str(tmp_path / "spool"), "forward": "PACS@127.0.0.1:104", "receive_first": 3})
    worker = Worker(Spool(tmp_path / "spool", 10**9), config, Metrics(lambda: {}), {})
    receiving = threading.Event()
    receiving.set()
    worker.receiving = receiving.is_set
    worker.submit(tmp_path / "a.dcm")  # one queued besides the one in hand: 2 < 3, so it waits
    waiter = threading.Thread(target=worker.wait_for_turn)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()
    worker.submit(tmp_path / "b.dcm")  # the backlog reaches 3: enhancing goes on beside receiving
    waiter.join(2)
    assert not waiter.is_alive()
    worker.queue.get_nowait()
    worker.queue.get_nowait()
    waiter = threading.Thread(target=worker.wait_for_turn)
    waiter.start()
    time.sleep(0.2)
    receiving.clear()  # the association ended
    waiter.join(2)
    assert not waiter.is_alive()
    immediate = Worker(Spool(tmp_path / "spool", 10**9),
                       build({"spool": str(tmp_path / "spool"), "forward": "PACS@127.0.0.1:104", "receive_first": 0}),
                       Metrics(lambda: {}), {})
    immediate.receiving = lambda: True
    started = time.monotonic()
    immediate.wait_for_turn()  # 0: never waits
    assert time.monotonic() - started < 0.05


def test_modality_models_from_the_config_file_and_the_command_line(tmp_path):
    """``modality_models = {MR = "..."}`` in a config file (relative to it, a Triton URL kept), and
    ``--modality-model MR=...`` on the command line, which replaces the file's."""
    config = tmp_path / "node.toml"
    config.write_text('spool = "spool"\nforward = "PACS@127.0.0.1:104"\nmodel = "a.engine"\n'
                      'modality_models = {MR = "mr.engine", ct = "grpc://h:8001/ct"}\n')
    loaded = settings_from(build_parser().parse_args(["--config", str(config)]))
    assert loaded.modality_models == (("MR", tmp_path / "mr.engine"), ("CT", "grpc://h:8001/ct"))
    listed = tmp_path / "listed.json"
    listed.write_text('{"spool": "s", "forward": "PACS@127.0.0.1:104", "modality_models": ["MR=mr.engine"]}')
    assert settings_from(build_parser().parse_args(["--config", str(listed)])).modality_models == (
        ("MR", tmp_path / "mr.engine"),)
    args = build_parser().parse_args(["--config", str(config), "--modality-model", "MR=/opt/b.engine"])
    assert settings_from(args).modality_models == (("MR", Path("/opt/b.engine")),)
    with pytest.raises(ConfigError, match="expected MODALITY=MODEL"):
        settings_from(build_parser().parse_args(["--config", str(config), "--modality-model", "MR"]))
