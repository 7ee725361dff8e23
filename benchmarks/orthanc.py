"""A throw-away Orthanc PACS for the node's tests and benchmark: loopback only, temporary
storage, stopped at the end.

Orthanc (Debian's ``orthanc`` package; ``.ci/run`` installs it) runs with a generated config
in a temporary folder: its own database and storage there, REST on one free port and DICOM
on another. Orthanc 1.10 has no listen-address setting, so it is kept to this machine by its
own checks: the REST API accepts loopback clients only (``RemoteAccessAllowed`` false), and
DICOM accepts associations only from the modalities declared here, from 127.0.0.1
(``DicomCheckModalityHost``; no C-ECHO/C-STORE from unknown callers).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ORTHANC = "Orthanc"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def available() -> str | None:
    """None if Orthanc can be started here, else why not."""
    if shutil.which(ORTHANC) is None:
        return "Orthanc is not installed (Debian: apt-get install orthanc; .ci/run installs it)"
    return None


@dataclass
class Orthanc:
    """One Orthanc process. ``modalities``: name -> (AE title, port on 127.0.0.1) it may talk to."""

    folder: Path
    ae_title: str = "ORTHANC"
    modalities: dict[str, tuple[str, int]] = field(default_factory=dict)
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def config(self) -> dict:
        return {
            "Name": "medclear-test", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "TemporaryDirectory": str(self.folder / "tmp"),
            "Plugins": [], "HttpServerEnabled": True, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "OrthancExplorerEnabled": False,
            "WebDavEnabled": False, "DicomServerEnabled": True, "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port, "DicomCheckCalledAet": False, "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False, "UnknownSopClassAccepted": False,
            "DicomModalities": {
                name: {"AET": ae, "Host": LOOPBACK, "Port": port, "AllowEcho": True, "AllowStore": True}
                for name, (ae, port) in self.modalities.items()
            },
            "StableAge": 1, "DicomScuTimeout": 30, "DicomAssociationCloseDelay": 0, "ConcurrentJobs": 2,
            "StorageCompression": False, "OverwriteInstances": False, "SaveJobs": False,
        }

    def start(self, timeout: float = 30.0) -> "Orthanc":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.folder / 'orthanc.log'}")
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s; see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- REST ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: object = None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
        return payload if raw else json.loads(payload or b"null")

    def get(self, path: str, raw: bool = False):
        return self.request("GET", path, raw=raw)

    def post(self, path: str, body: object):
        return self.request("POST", path, body)

    def upload(self, data: bytes) -> dict:
        request = urllib.request.Request(self.url + "/instances", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def series(self) -> dict[str, dict]:
        """SeriesInstanceUID -> {id, description, study, instances (count)} for every series."""
        out = {}
        for item in self.get("/series?expand"):
            tags = item["MainDicomTags"]
            out[tags["SeriesInstanceUID"]] = {
                "id": item["ID"], "description": tags.get("SeriesDescription", ""),
                "study": self.get(f"/studies/{item['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"],
                "instances": len(item["Instances"]),
            }
        return out

    def instance_uids(self) -> list[str]:
        """SOP Instance UIDs of every stored instance (one entry per stored instance)."""
        return [self.get(f"/instances/{iid}")["MainDicomTags"]["SOPInstanceUID"] for iid in self.get("/instances")]

    def statistics(self) -> dict:
        return self.get("/statistics")

    def send_series(self, modality: str, series_id: str) -> dict:
        """C-STORE a stored series to a declared modality (Orthanc's own Store SCU)."""
        return self.post(f"/modalities/{modality}/store", {"Resources": [series_id], "Synchronous": True})
