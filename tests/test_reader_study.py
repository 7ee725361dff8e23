"""The blinded reader study (python -m benchmarks.reader_study, docs/READER_STUDY.md).

A small study is prepared from packaged images (the shipped low-dose CT sample, pydicom's
CT_small and MR_small) with three arms: original, medclear and NLM. Then:

- prepare: images are windowed as documented and carry nothing but pixels; bad input is one line;
- the server: page source, task data, image URLs and image responses tell no arm apart; a
  reader's token reaches only that reader's answers; the admin API needs the admin token; the
  server binds to loopback unless ``--host`` is given;
- a browser test (headless Debian chromium through Selenium) signs in two readers, scores the
  study to completion with a reload and a server restart mid-way, then ``analyze`` writes the
  CSV and the report, whose numbers are compared with the clicks;
- the statistics against a hand-computed example (Shrout & Fleiss 1979 for the ICC, the exact
  sign-flip distribution for Wilcoxon, the kappa and t-interval formulas, a binomial sum).

``MEDCLEAR_DOC_SCREENSHOTS=1`` makes the browser test also write its screenshots to
docs/images/reader_study_*.png (the documentation's pictures).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from benchmarks.reader_study import analyze
from benchmarks.reader_study.arms import ab_pairs, check_arms, parse_arm
from benchmarks.reader_study.items import ITEM_KEYS
from benchmarks.reader_study.manifest import load_study
from benchmarks.reader_study.server import HostRefused, bind_host

REPO = Path(__file__).resolve().parents[1]
CASES = [REPO / "samples" / "ct_quarter_dose.dcm", Path(get_testdata_file("CT_small.dcm")),
         Path(get_testdata_file("MR_small.dcm"))]
SEED = 20240611
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What each reader gives an arm in the browser test (items and cases shift it by -1..+1).
ARM_BASE = {"original": 2, "medclear": 4, "nlm": 3}


# --- fixtures ---------------------------------------------------------------------------------

def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.reader_study", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """The study, prepared by the CLI in a process that must not import torch."""
    out = tmp_path_factory.mktemp("study")
    code = ("import sys; from benchmarks.reader_study.__main__ import main; "
            f"rc = main(['prepare', *{[str(c) for c in CASES]!r}, '-o', {str(out)!r}, '--seed', '{SEED}']); "
            "import benchmarks.reader_study.app, benchmarks.reader_study.report; "
            "print('torch imported' if 'torch' in sys.modules else 'torch-free'); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "torch-free"
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``serve STUDY --port P`` in a subprocess; restartable on the same port."""

    def __init__(self, study: Path) -> None:
        self.study, self.port, self.process = study, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"
        self.first_lines: list[str] = []

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.reader_study", "serve", str(self.study), "--port", str(self.port)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.first_lines = [self.process.stdout.readline().strip() for _ in range(2)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                assert self.process.poll() is None, f"server exited: {self.first_lines}"
                time.sleep(0.2)
        raise AssertionError("the server did not answer within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.process.stdout.close()

    @property
    def admin_token(self) -> str:
        return (self.study / "admin.token").read_text().strip()


@pytest.fixture
def server(tmp_path, study_dir):
    """A server on a private copy of the study (its own answers database)."""
    copy = tmp_path / "study"
    shutil.copytree(study_dir, copy)
    running = Server(copy).start()
    yield running
    running.stop()


def http(url: str, body: dict | None = None, token: str | None = None, raw: bool = False):
    """(status, headers, JSON or bytes) of a GET, or a JSON POST when ``body`` is given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, head, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, head, payload = error.code, dict(error.headers), error.read()
    return status, head, payload if raw else json.loads(payload or b"null")


def image_index(study_dir: Path) -> dict[str, tuple[str, str, str]]:
    """Opaque image id -> (case id, arm label, window), read from the manifest (never served)."""
    study = load_study(study_dir)
    return {image: (case.id, study.arm(arm).label, window) for case in study.cases
            for arm, windows in case.images.items() for window, image in windows.items()}


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == PNG_SIGNATURE
    chunks, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        chunks.append(data[offset + 4:offset + 8])
        offset += 12 + length
    return chunks


def only_pixels(data: bytes) -> bool:
    """A PNG of header, image data and end only: no text, time, gamma or other chunks."""
    chunks = png_chunks(data)
    return chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and set(chunks[1:-1]) == {b"IDAT"}


def identifying_strings() -> set[str]:
    """Text of the source files that must never reach a browser: names, UIDs and every string
    attribute of at least 4 characters (coded strings aside: DICOM's defined terms), and the arm
    labels and kinds."""
    found = {"original", "medclear", "nlm", "manifest", "source"}
    for path in CASES:
        found |= {path.name, path.stem}
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for element in ds.iterall():
            if element.VR in ("PN", "LO", "SH", "UI", "DA", "TM", "LT", "ST", "DS", "IS") and element.value:
                values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
                found |= {str(v).strip() for v in values if len(str(v).strip()) >= 4}
    # Short numbers (rescale, window, times) could match a hex image id by chance; dates and UIDs stay.
    found = {s for s in found if any(ch.isalpha() for ch in s) or len(s) >= 8}
    return found


# --- prepare ----------------------------------------------------------------------------------

def test_arm_specs():
    assert parse_arm("original") == ("original", "original", {})
    assert parse_arm("low=medclear:strength=0.5") == ("low", "medclear", {"strength": 0.5})
    assert parse_arm("nlm:h=1.2") == ("nlm:h=1.2", "nlm", {"h": 1.2})
    assert parse_arm("big=medclear:model=m.onnx,strength=2") == ("big", "medclear", {"model": "m.onnx", "strength": 2.0})
    for bad in ("fancy", "medclear:strength=9", "nlm:strength=1", "nlm:h=-1", "original:h=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_arm(bad)
    arms = check_arms([parse_arm(s) for s in ("original", "medclear", "nlm")])
    assert [a.id for a in arms] == ["a1", "a2", "a3"]
    assert ab_pairs(arms) == [("a1", "a2"), ("a1", "a3"), ("a2", "a3")]
    assert ab_pairs(arms, "medclear") == [("a1", "a2"), ("a2", "a3")]
    assert ab_pairs(arms, "none") == []
    with pytest.raises(ValueError):
        check_arms([parse_arm("nlm"), parse_arm("nlm")])


def test_prepare_renders_every_case_and_arm_in_the_documented_windows(study_dir):
    study = load_study(study_dir)
    assert study.seed == SEED
    assert [arm.label for arm in study.arms] == ["original", "medclear", "nlm"]
    assert [case.windows for case in study.cases] == [("Soft tissue", "Lung"), ("Soft tissue", "Lung"), ("Default",)]
    assert sorted(p.stem for p in study.images_dir.glob("*.png")) == sorted(study.image_ids())
    assert len(study.image_ids()) == 3 * (2 + 2 + 1)
    # The original arm in the soft-tissue window is the file's HU mapped from [-160, 240] to 0..255.
    ds = pydicom.dcmread(CASES[1])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip(np.rint((hu + 160.0) / 400.0 * 255.0), 0, 255).astype(np.uint8)
    case = study.cases[1]
    original = np.asarray(Image.open(study.images_dir / f"{case.images['a1']['Soft tissue']}.png"))
    np.testing.assert_array_equal(original, expected)
    # MR: the file's VOI window (center 600, width 1600).
    mr = pydicom.dcmread(CASES[2])
    values = mr.pixel_array * float(mr.get("RescaleSlope", 1)) + float(mr.get("RescaleIntercept", 0))
    expected_mr = np.clip(np.rint((values - (600 - 800)) / 1600 * 255.0), 0, 255).astype(np.uint8)
    mr_case = study.cases[2]
    np.testing.assert_array_equal(np.asarray(Image.open(study.images_dir / f"{mr_case.images['a1']['Default']}.png")),
                                  expected_mr)
    for case in study.cases:
        arrays = {arm: np.asarray(Image.open(study.images_dir / f"{windows[case.windows[0]]}.png"))
                  for arm, windows in case.images.items()}
        assert len({a.shape for a in arrays.values()}) == 1
        assert not np.array_equal(arrays["a1"], arrays["a2"]) and not np.array_equal(arrays["a1"], arrays["a3"])


def test_prepared_images_carry_nothing_but_pixels(study_dir):
    study = load_study(study_dir)
    for case in study.cases:
        for window in case.windows:
            files = [(study.images_dir / f"{case.images[arm.id][window]}.png").read_bytes() for arm in study.arms]
            assert all(only_pixels(data) for data in files)
            assert len({data[16:33] for data in files}) == 1  # IHDR: same size, bit depth, colour type
            assert len({len(data) for data in files}) == 1  # uncompressed: a smoother arm is no smaller


def test_prepare_reports_bad_input_in_one_line_and_writes_no_study(tmp_path, study_dir):
    bad = tmp_path / "notes.dcm"
    bad.write_text("not an image")
    result = _run("prepare", str(CASES[1]), str(bad), "-o", str(tmp_path / "s"), "--seed", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "notes.dcm" in lines[0] and "not a DICOM file" in lines[0]
    assert not (tmp_path / "s" / "manifest.json").exists()
    again = _run("prepare", str(CASES[1]), "-o", str(study_dir), "--seed", "1")
    assert again.returncode == 1 and "already prepared" in again.stderr
    usage = _run("prepare", str(CASES[1]), "-o", str(tmp_path / "u"), "--arm", "original", "--arm", "fancy")
    assert usage.returncode == 2 and "unknown kind 'fancy'" in usage.stderr


def test_prepare_refuses_an_arm_that_changes_the_image_size_and_leaves_no_images(tmp_path):
    out = tmp_path / "s"
    sr = REPO / "models" / "medclear_sr2.fp32.onnx"
    result = _run("prepare", str(CASES[1]), "-o", str(out), "--seed", "1", "--arm", "original",
                  "--arm", f"sr=medclear:model={sr}")
    assert result.returncode == 1 and "must keep the image size" in result.stderr
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.png"))  # nothing rendered is left


def test_medclear_and_nlm_arms_without_a_model_use_the_frames_modality_model(tmp_path, monkeypatch):
    from onnx_fixtures import install_denoisers, write_tiny_onnx

    from benchmarks.reader_study.arms import ArmRunner
    from benchmarks.reader_study.manifest import Arm
    from runtime.backends import select as select_module
    from runtime.dicom_io import decode, read_dataset

    # Each tiny model covers one modality only: a frame sent to the other model would be refused.
    _, mr_model = install_denoisers(monkeypatch, tmp_path / "models")
    both = write_tiny_onnx(tmp_path / "both.onnx", seed=3, model_name="tiny-both", modalities=["CT", "MR"])
    medclear, nlm = Arm("a1", "medclear", "medclear"), Arm("a2", "nlm", "nlm", {"h": 0.8})
    datasets = {}
    for modality in ("CT", "MR"):
        datasets[modality] = read_dataset(CASES[1] if modality == "CT" else CASES[2])
        decode(datasets[modality])

    runner = ArmRunner()
    try:
        assert runner.backend().contract.model_name == "tiny-default"  # what prepare opens first
        assert runner.backend(modality="MR").contract.model_name == "tiny-mr"
        routed = {modality: runner.values(medclear, ds, 0) for modality, ds in datasets.items()}
        for ds in datasets.values():
            assert np.isfinite(runner.values(nlm, ds, 0)).all()  # normalized by the frame's model's contract
        named = runner.values(Arm("a3", "mr", "medclear", {"model": str(mr_model)}), datasets["MR"], 0)
        np.testing.assert_array_equal(routed["MR"], named)
    finally:
        runner.close()

    # One model for every frame: the study's --model, or $MEDCLEAR_MODEL.
    for runner, env in ((ArmRunner(both), None), (ArmRunner(), str(both))):
        if env:
            monkeypatch.setenv(select_module.MODEL_ENV, env)
        try:
            assert {runner.backend(modality=m).contract.model_name for m in ("CT", "MR", None)} == {"tiny-both"}
            for modality, ds in datasets.items():
                assert not np.array_equal(runner.values(medclear, ds, 0), routed[modality])
                assert np.isfinite(runner.values(nlm, ds, 0)).all()
        finally:
            runner.close()


def test_study_mistakes_are_one_line_and_an_unscored_study_can_be_replaced(tmp_path, study_dir):
    from benchmarks.reader_study.store import DATABASE, Store

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = _run("prepare", str(CASES[1]), "-o", str(a_file / "s"), "--seed", "1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "a_file" in result.stderr
    assert _run("prepare", str(CASES[1]), "-o", str(tmp_path / "x"), "--arm", "equal=original",
                "--arm", "original").returncode == 2  # 'equal' is an A/B answer
    copy = tmp_path / "study"
    shutil.copytree(study_dir, copy)
    Store(copy / DATABASE).add_reader("Ann")  # served and signed up to, never scored
    again = _run("prepare", str(CASES[1]), "-o", str(copy), "--seed", "2", "--overwrite")
    assert again.returncode == 0, again.stderr


def test_an_empty_admin_token_file_is_replaced_not_trusted(tmp_path, study_dir):
    from benchmarks.reader_study.manifest import load_study
    from benchmarks.reader_study.server import ADMIN_TOKEN, admin_token

    copy = tmp_path / "study"
    shutil.copytree(study_dir, copy)
    (copy / ADMIN_TOKEN).write_text("")  # as an interrupted first serve could leave it
    token = admin_token(load_study(copy))
    assert len(token) >= 24 and (copy / ADMIN_TOKEN).read_text().strip() == token
    assert oct((copy / ADMIN_TOKEN).stat().st_mode & 0o777) == "0o600"


def test_answer_tables_cannot_smuggle_spreadsheet_formulas():
    from benchmarks.reader_study.report import spreadsheet_safe

    table = pd.DataFrame({"reader": ["=HYPERLINK(1)", "Ann", "-1+2"], "score": [1, 2, 3]})
    safe_table = spreadsheet_safe(table)
    assert list(safe_table["reader"]) == ["'=HYPERLINK(1)", "Ann", "'-1+2"] and list(safe_table["score"]) == [1, 2, 3]


# --- the server: blinding, isolation, binding ---------------------------------------------------

def test_binds_to_loopback_unless_host_is_given():
    assert bind_host(None, explicit=False) == "127.0.0.1"
    assert bind_host("localhost", explicit=False) == "localhost"
    assert bind_host("::1", explicit=False) == "::1"
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(HostRefused, match="--host"):
            bind_host(host, explicit=False)
        assert bind_host(host, explicit=True) == host


def test_served_pages_and_images_tell_no_arm_apart(server, study_dir):
    assert server.first_lines[0].startswith("reader study: serving") and f"http://127.0.0.1:{server.port}/" in \
        server.first_lines[0]
    status, _, alice = http(f"{server.url}/api/signin", {"name": "Alice"})
    assert status == 200
    texts = [http(f"{server.url}{path}", raw=True)[2].decode() for path in
             ("/", "/admin", "/static/app.js", "/static/admin.js", "/static/style.css")]
    status, _, tasks = http(f"{server.url}/api/tasks", token=alice["token"])
    assert status == 200
    texts.append(json.dumps(tasks))
    leaks = {s for s in identifying_strings() for text in texts if s.lower() in text.lower()}
    assert not leaks
    index = image_index(study_dir)
    seen: dict[str, tuple[str, ...]] = {}
    assert len(tasks["tasks"]) == 3 * 3 + 3 * 3
    for task in tasks["tasks"]:
        assert set(task) == {"kind", "windows", "images", "answers"}
        for image in task["images"]:
            for window, url in image.items():
                assert url.startswith("/img/") and url.endswith(".png") and url[5:-4] in index
                assert index[url[5:-4]][2] == window
                status, headers, data = http(f"{server.url}{url}", token=alice["token"], raw=True)
                assert status == 200 and only_pixels(data)
                seen[url] = tuple(sorted((k.lower(), v) for k, v in headers.items()
                                         if k.lower() not in ("content-length", "date")))
    assert len(seen) == len(index)  # every image is shown somewhere
    assert len(set(seen.values())) == 1  # one set of headers for every image: no ETag, no mtime
    assert not any(k in ("etag", "last-modified") for k, _ in next(iter(seen.values())))


def test_a_reader_reaches_only_their_own_answers(server):
    _, _, alice = http(f"{server.url}/api/signin", {"name": "Alice"})
    _, _, bob = http(f"{server.url}/api/signin", {"name": "Bob"})
    assert http(f"{server.url}/api/signin", {"name": "Alice"})[0] == 409  # a name is not a key
    assert http(f"{server.url}/api/answer", {"task": 0, "item": "overall", "value": 5},
                token=alice["token"])[2]["saved"]
    status, _, saved = http(f"{server.url}/api/answer", {"task": 0, "item": "overall", "value": 1}, token=bob["token"])
    assert status == 200 and saved["done"] == 0
    # Bob cannot name another reader, nor read or write without a token.
    assert http(f"{server.url}/api/answer", {"task": 0, "item": "overall", "value": 2, "reader": "Alice"},
                token=bob["token"])[0] == 422
    assert http(f"{server.url}/api/tasks?reader=Alice", token=bob["token"])[2]["reader"] == "Bob"
    assert http(f"{server.url}/api/tasks")[0] == 401
    assert http(f"{server.url}/api/answer", {"task": 0, "item": "overall", "value": 2})[0] == 401
    assert http(f"{server.url}/api/answer", {"task": 0, "item": "overall", "value": 2}, token="forged")[0] == 401
    alice_tasks = http(f"{server.url}/api/tasks", token=alice["token"])[2]["tasks"]
    bob_tasks = http(f"{server.url}/api/tasks", token=bob["token"])[2]["tasks"]
    assert alice_tasks[0]["answers"] == {"overall": 5} and bob_tasks[0]["answers"] == {"overall": 1}
    assert all(not t["answers"] for t in alice_tasks[1:] + bob_tasks[1:])
    assert [t["images"] for t in alice_tasks] != [t["images"] for t in bob_tasks]  # each reader's own order
    image = alice_tasks[0]["images"][0]
    assert http(f"{server.url}{next(iter(image.values()))}", raw=True)[0] == 401
    # A returning reader's token signs in as that reader; the admin API wants the admin token.
    assert http(f"{server.url}/api/signin", {"token": alice["token"]})[2]["name"] == "Alice"
    assert http(f"{server.url}/api/signin", {"token": "forged"})[0] == 401
    for token in (None, alice["token"], "forged"):
        assert http(f"{server.url}/api/admin/progress", token=token)[0] == 401
    progress = http(f"{server.url}/api/admin/progress", token=server.admin_token)[2]
    assert [(r["name"], r["done"], r["total"]) for r in progress["readers"]] == [("Alice", 0, 18), ("Bob", 0, 18)]
    assert "answers" not in json.dumps(progress)
    status, _, invited = http(f"{server.url}/api/admin/readers", {"name": "Carol"}, token=server.admin_token)
    assert status == 200 and http(f"{server.url}/api/tasks", token=invited["token"])[2]["reader"] == "Carol"


# --- the browser test -------------------------------------------------------------------------

def _browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,860", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


def _wait(driver, condition, what: str, timeout: float = 20):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _body(driver, key: str) -> str | None:
    return driver.execute_script(f"return document.body.dataset.{key}")


def expected_score(reader: int, case: str, arm: str, item: str) -> int:
    """What reader ``reader`` (0, 1) gives: the arm's base, shifted by reader, case and item."""
    shift = (reader + int(case[1:]) + ITEM_KEYS.index(item)) % 3 - 1
    return min(5, max(1, ARM_BASE[arm] + shift))


class Reading:
    """Drives the scoring page for one reader, answering as ``expected_score`` says."""

    def __init__(self, driver, index: dict, reader: int) -> None:
        self.driver, self.index, self.reader = driver, index, reader

    def shown(self) -> list[tuple[str, str, str]]:
        sources = [img.get_attribute("src") for img in self.driver.find_elements(By.CSS_SELECTOR, "#viewers img")]
        return [self.index[src.rsplit("/", 1)[1][:-4]] for src in sources]

    def click(self, item: str, value) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f'#questions button[data-item="{item}"][data-value="{value}"]').click()

    def pressed(self) -> dict[str, str]:
        return {b.get_attribute("data-item"): b.get_attribute("data-value") for b in
                self.driver.find_elements(By.CSS_SELECTOR, '#questions button[aria-pressed="true"]')}

    def answer(self, items: tuple[str, ...] | None = None) -> None:
        """Answer the shown task (only ``items`` of a Likert task when given)."""
        shown = self.shown()
        if _body(self.driver, "kind") == "likert":
            (case, arm, _), = shown
            for item in items or ITEM_KEYS:
                self.click(item, expected_score(self.reader, case, arm, item))
        else:
            (case, left, _), (_, right, _) = shown
            self.click("preference", "left" if ARM_BASE[left] > ARM_BASE[right] else "right")
        _wait(self.driver, lambda d: _body(d, "pending") == "0", "answers saved")

    def next(self) -> None:
        before = _body(self.driver, "task")
        self.driver.find_element("id", "next").click()
        _wait(self.driver, lambda d: _body(d, "task") != before, "the next task")


def _scale(transform: str) -> float:
    """The x scale of a CSS ``matrix(a, b, c, d, e, f)``."""
    return float(transform.removeprefix("matrix(").split(",")[0])


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[1] == 1400
    assert image.std() > 20  # a rendered page, not a blank one
    if os.environ.get("MEDCLEAR_DOC_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / "images" / name)
    return path


@pytest.mark.chromium
def test_two_readers_score_the_study_in_a_browser_and_analyze_reports_it(tmp_path, study_dir):
    copy = tmp_path / "study"
    shutil.copytree(study_dir, copy)
    server = Server(copy).start()
    index = image_index(copy)
    driver = _browser()
    try:
        total = 18
        # Reader 0: half the study, then a task half done; reload and server restart lose nothing.
        driver.get(server.url)
        _wait(driver, lambda d: d.find_element("id", "signin").is_displayed(), "the sign-in form")
        driver.find_element("id", "name").send_keys("Alice")
        driver.find_element("id", "signin-name").click()
        _wait(driver, lambda d: _body(d, "task") == "0", "the first task")
        assert "Your personal code" in driver.find_element("id", "code-box").text
        alice = Reading(driver, index, 0)
        shots: set[str] = set()

        def step(reading: Reading) -> None:
            kind = _body(driver, "kind")
            if kind == "likert" and reading.shown()[0][0] == "c01" and kind not in shots:
                reading.answer(ITEM_KEYS[:3])
                driver.execute_script("document.getElementById('code-box').hidden = true")  # the personal code
                _screenshot(driver, tmp_path, "reader_study_scoring.png")
                shots.add(kind)
                case, arm, _ = reading.shown()[0]
                driver.find_element(By.CSS_SELECTOR, '#windows button[data-window="Lung"]').click()
                assert reading.shown() == [(case, arm, "Lung")]
                driver.find_element(By.CSS_SELECTOR, '#windows button[data-window="Soft tissue"]').click()
                assert reading.shown() == [(case, arm, "Soft tissue")]
                fitted = driver.find_element(By.CSS_SELECTOR, "#viewers img").value_of_css_property("transform")
                driver.find_element("id", "zoom-in").click()
                zoomed = driver.find_element(By.CSS_SELECTOR, "#viewers img").value_of_css_property("transform")
                assert _scale(zoomed) == pytest.approx(1.25 * _scale(fitted))
                driver.find_element("id", "zoom-fit").click()
            elif kind == "ab" and kind not in shots:
                _screenshot(driver, tmp_path, "reader_study_ab.png")
                shots.add(kind)
            reading.answer()
            reading.next()

        for _ in range(4):
            step(alice)
        assert _body(driver, "done") == "4" and _body(driver, "kind") == "likert"
        half_task, half_shown = _body(driver, "task"), alice.shown()
        alice.answer(ITEM_KEYS[:2])
        for restart in (False, True):
            if restart:
                server.stop()
                server.start()
            driver.refresh()
            _wait(driver, lambda d: _body(d, "task") == half_task, "the half-done task after reload")
            assert _body(driver, "done") == "4"
            assert alice.shown() == half_shown
            assert set(alice.pressed()) == set(ITEM_KEYS[:2])
        while _body(driver, "task") != "done":
            step(alice)
        assert driver.find_element("id", "finished").is_displayed()
        assert _body(driver, "done") == str(total)

        # Reader 1 on the same browser after signing out: a taken name is refused; no answers shown.
        driver.find_element("id", "signout").click()
        _wait(driver, lambda d: d.find_element("id", "signin").is_displayed(), "the sign-in form")
        driver.find_element("id", "name").send_keys("Alice")
        driver.find_element("id", "signin-name").click()
        _wait(driver, lambda d: "taken" in d.find_element("id", "signin-error").text, "the name-taken message")
        driver.find_element("id", "name").clear()
        driver.find_element("id", "name").send_keys("Bob")
        driver.find_element("id", "signin-name").click()
        _wait(driver, lambda d: _body(d, "task") == "0", "Bob's first task")
        assert _body(driver, "done") == "0" and not Reading(driver, index, 1).pressed()
        bob = Reading(driver, index, 1)
        while _body(driver, "task") != "done":
            step(bob)
        progress = http(f"{server.url}/api/admin/progress", token=server.admin_token)[2]["readers"]
        assert [(r["name"], r["done"]) for r in progress] == [("Alice", total), ("Bob", total)]
    finally:
        driver.quit()
        server.stop()
    assert shots == {"likert", "ab"}

    result = _run("analyze", str(copy))
    assert result.returncode == 0, result.stderr
    out = copy / "analysis"
    answers = pd.read_csv(out / "answers.csv")
    assert list(answers.columns) == analyze.LIKERT_COLUMNS
    assert len(answers) == 2 * 9 * 5
    readers = {"Alice": 0, "Bob": 1}
    wanted = [expected_score(readers[r.reader], r.case, r.arm, r.item) for r in answers.itertuples()]
    assert answers["score"].tolist() == wanted
    assert (answers["time"] >= 0).all()
    preferences = pd.read_csv(out / "preferences.csv")
    assert len(preferences) == 2 * 9
    assert all(p.preferred == max((p.arm_a, p.arm_b), key=ARM_BASE.get) for p in preferences.itertuples())
    report = (out / "report.md").read_text()
    medclear_overall = answers[(answers.arm == "medclear") & (answers.item == "overall")]["score"]
    assert f"| medclear | overall | 6 | {medclear_overall.mean():.3g} |" in report
    assert "| original | medclear | 6 | 0 (0%) | 0 | 6 (100%) |" in report  # medclear won every A/B choice
    for section in ("## Mean scores", "## Paired Wilcoxon signed-rank tests", "ICC(2,k)", "weighted kappa",
                    "## A/B preference"):
        assert section in report
    for plot in ("scores.png", "preferences.png"):
        assert (out / plot).read_bytes()[:8] == PNG_SIGNATURE


# --- statistics against a hand-computed example -------------------------------------------------

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges. Their ICC(2,1) = 0.29, ICC(2,k) = 0.62.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def _likert(rows: list[tuple[str, str, str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["reader", "case", "arm", "item", "score"])
    return frame.assign(time=1.0, answered_at="")


def test_icc_matches_shrout_and_fleiss():
    rows = [(f"judge{j}", f"c{t}", "x", "overall", SHROUT_FLEISS[t][j]) for t in range(6) for j in range(4)]
    result = analyze.agreement(_likert(rows)).iloc[0]
    assert round(result["icc2k"], 2) == 0.62 and round(result["icc21"], 2) == 0.29
    # The same from the two-way ANOVA mean squares (Shrout & Fleiss, Table 3).
    x = np.array(SHROUT_FLEISS, dtype=float)
    n, k = x.shape
    grand = x.mean()
    bms = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    jms = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    ems = ((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0) + grand) ** 2).sum() / ((n - 1) * (k - 1))
    assert result["icc2k"] == pytest.approx((bms - ems) / (bms + (jms - ems) / n), abs=1e-9)
    assert result["icc21"] == pytest.approx((bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n), abs=1e-9)
    assert result["icc2k_low"] < result["icc2k"] < result["icc2k_high"]


# Two readers x 5 cases x 2 arms, one item.
HAND = {  # reader -> arm -> scores of cases c1..c5
    "R1": {"A": [2, 3, 2, 4, 3], "B": [4, 4, 3, 4, 5]},
    "R2": {"A": [3, 3, 1, 3, 2], "B": [4, 5, 3, 2, 4]},
}


def _hand_frame() -> pd.DataFrame:
    return _likert([(reader, f"c{c + 1}", arm, "overall", scores[c]) for reader, arms in HAND.items()
                    for arm, scores in arms.items() for c in range(5)])


def test_wilcoxon_matches_the_exact_sign_flip_distribution():
    row = analyze.wilcoxon_tests(_hand_frame(), ["A", "B"]).iloc[0]
    diffs = [b - a for arms in HAND.values() for a, b in zip(arms["A"], arms["B"])]
    assert diffs == [2, 1, 1, 0, 2, 1, 2, 2, -1, 2]
    nonzero = [d for d in diffs if d]  # Wilcoxon's method drops zero differences
    ordered = sorted(abs(d) for d in nonzero)  # |d| = 1 x4 (ranks 1-4, midrank 2.5), 2 x5 (ranks 5-9, midrank 7)
    ranks = [2.5 if abs(d) == 1 else 7.0 for d in nonzero]
    assert ordered == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    w_plus = sum(r for r, d in zip(ranks, nonzero) if d > 0)
    w_minus = sum(r for r, d in zip(ranks, nonzero) if d < 0)
    assert (w_plus, w_minus) == (42.5, 2.5)
    total = sum(ranks)
    extreme = sum(1 for signs in itertools.product((0, 1), repeat=len(ranks))
                  if min(w := sum(r for r, s in zip(ranks, signs) if s), total - w) <= w_minus)
    assert row["n"] == 10 and row["mean_diff"] == pytest.approx(1.2)
    assert row["statistic"] == pytest.approx(w_minus)
    assert row["p"] == pytest.approx(extreme / 2 ** len(ranks))
    assert row["p_holm"] == pytest.approx(row["p"])  # one comparison


def test_weighted_kappa_and_means_match_their_formulas():
    agreement = analyze.agreement(_hand_frame()).iloc[0]
    r1 = HAND["R1"]["A"] + HAND["R1"]["B"]
    r2 = HAND["R2"]["A"] + HAND["R2"]["B"]
    observed = np.zeros((5, 5))
    for a, b in zip(r1, r2):
        observed[a - 1, b - 1] += 1 / len(r1)
    chance = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    weights = np.array([[(i - j) ** 2 / 16 for j in range(5)] for i in range(5)])
    kappa = 1 - (weights * observed).sum() / (weights * chance).sum()
    assert agreement["kappa"] == pytest.approx(kappa, abs=1e-12)
    assert agreement["kappa_pairs"] == {"R1 / R2": pytest.approx(kappa, abs=1e-12)}
    assert agreement["readers"] == 2 and agreement["images"] == 10
    means = analyze.mean_scores(_hand_frame()).set_index("arm")
    b = np.array(HAND["R1"]["B"] + HAND["R2"]["B"], dtype=float)
    half_width = 2.262157 * b.std(ddof=1) / math.sqrt(10)  # t(0.975, 9 df) from the table
    assert means.loc["B", "mean"] == pytest.approx(3.8)
    assert means.loc["B", "ci_low"] == pytest.approx(3.8 - half_width, abs=1e-5)
    assert means.loc["B", "ci_high"] == pytest.approx(3.8 + half_width, abs=1e-5)


def test_preference_summary_counts_and_binomial_test():
    choices = ["B"] * 7 + ["A"] + ["equal"] * 2
    lefts = ["A", "B"] * 5
    frame = pd.DataFrame({"reader": "R1", "case": [f"c{i}" for i in range(10)], "arm_a": "A", "arm_b": "B",
                          "left": lefts, "preferred": choices, "time": 1.0, "answered_at": ""})
    row = analyze.preference_summary(frame).iloc[0]
    assert (row["n"], row["wins_a"], row["wins_b"], row["equal"]) == (10, 1, 7, 2)
    assert row["share_b"] == pytest.approx(0.7)
    assert row["p"] == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2 ** 8)  # 0.0703125
    left_won = sum(c == left for c, left in zip(choices, lefts))
    assert row["left_share"] == pytest.approx(left_won / 8)
