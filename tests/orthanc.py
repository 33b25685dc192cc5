"""Orthanc (Debian package orthanc, optionally with orthanc-dicomweb) as a real
peer: a managed process with its own configuration, storage and loopback ports.

Orthanc's DICOM server listens on every interface, so tests that start it need
the loopback-only network namespace tests/run provides (see
peers.loopback_only). Every wait has a deadline and stop() always ends the
process it started.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from peers import dcmtk_env, free_port

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc:
    """One Orthanc process. `modalities` maps AE titles to (host, port) of the
    remote peers it may query or send to (C-FIND, C-MOVE destinations)."""

    def __init__(self, work_dir: Path, ae_title: str = "ORTHANC", dicomweb: bool = False,
                 modalities: dict[str, tuple[str, int]] | None = None):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        config = {
            "Name": "nectar-tests",
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {ae: [ae, host, port] for ae, (host, port) in (modalities or {}).items()},
            "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"} if dicomweb else {},
        }
        self.config_path = self.work_dir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = self.work_dir / "orthanc.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "Orthanc":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["Orthanc", str(self.config_path)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env())
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode} during start; see {self.log_path}")
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer GET /system within {READY_TIMEOUT} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, path: str):
        with urllib.request.urlopen(self.base_url + path, timeout=30) as r:
            return json.load(r)

    def post(self, path: str, body: bytes, content_type: str = "application/json"):
        request = urllib.request.Request(self.base_url + path, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as r:
            payload = r.read()
        return json.loads(payload) if payload else None

    def upload(self, files) -> int:
        """Stores Part 10 files over Orthanc's REST API; returns how many it took."""
        stored = 0
        for path in files:
            try:
                self.post("/instances", Path(path).read_bytes(), "application/dicom")
                stored += 1
            except urllib.error.HTTPError:
                pass  # Orthanc refuses a few corpus files; callers compare UID sets
        return stored

    def instance_count(self) -> int:
        return self.get("/statistics")["CountInstances"]

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every instance Orthanc holds."""
        uids = set()
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            uids.add(tags["SOPInstanceUID"])
        return uids
