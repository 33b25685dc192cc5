"""Real DICOM peers driven by the tests: dcmtk's echoscu/storescu and a
pynetdicom reference Storage SCP that records the exact bytes it receives.

dcmtk 3.6.7 waits on Nagle's algorithm for small responses unless TCP_NODELAY=1 is
in its environment, so every dcmtk process gets it. The dcmtk binaries are taken
from /usr/bin: pynetdicom installs Python apps of the same names (echoscu,
storescu) that may come first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

DCMTK_TIMEOUT = 300


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_only() -> bool:
    """True when this process's network namespace has no interface but
    loopback (tests/run arranges it), so a peer that listens on every
    interface (dcmtk storescp, Orthanc) listens on 127.0.0.1 alone."""
    try:
        with open("/proc/net/dev") as f:  # per namespace, unlike /sys/class/net
            names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return False
    return names == ["lo"]


ALL_INTERFACE_PEERS = (
    "needs a network namespace with loopback only (tests/run provides one): "
    "this peer listens on every interface"
)


def dcmtk(name: str) -> str:
    """Path of a dcmtk tool, never pynetdicom's Python app of the same name."""
    for cand in (f"/usr/bin/{name}", shutil.which(name)):
        if cand and os.path.isfile(cand):
            with open(cand, "rb") as f:
                if not f.read(2) == b"#!":  # a real binary, not a Python entry point
                    return cand
    raise FileNotFoundError(f"dcmtk's {name} not found (apt-get install dcmtk)")


def dcmtk_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run_dcmtk(args: list[str], timeout: float = DCMTK_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [dcmtk(args[0]), *args[1:]],
        env=dcmtk_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        errors="replace", timeout=timeout,
    )


@dataclass
class EchoResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "Received Echo Response (Success)" in self.output

    @property
    def rejected(self) -> bool:
        return "Association Rejected" in self.output


def echoscu(port: int, called: str = "NECTAR", calling: str = "ECHOSCU", extra: tuple = (),
            timeout: float = 60) -> EchoResult:
    p = run_dcmtk(["echoscu", "-v", "-aec", called, "-aet", calling, "-to", "10", "-ta", "10",
                   "-ts", "10", "-td", "10", *extra, "127.0.0.1", str(port)], timeout=timeout)
    return EchoResult(p.returncode, p.stdout + p.stderr)


_SENDING = re.compile(r"^I: Sending file: (.*)$")
_RESPONSE = re.compile(r"^I: Received Store Response \((.*)\)$")
_FAILED = re.compile(r"^E: Store Failed, file: (.*):$")


@dataclass
class StorescuRun:
    returncode: int
    output: str
    # file (as given on the command line) -> "Success", other status text, or "Failed"
    status: dict[str, str]

    def succeeded(self) -> list[str]:
        return [f for f, s in self.status.items() if s == "Success"]


def storescu(port: int, files: list[Path | str], option: str | None = None, called: str = "NECTAR",
             calling: str = "STORESCU", extra: tuple = (), timeout: float = DCMTK_TIMEOUT) -> StorescuRun:
    """One storescu run over `files`, in order, proposing only the SOP classes they
    need (-R) with `option` (e.g. -xv) choosing the preferred transfer syntax; does
    not halt on a failed store (-nh). Per-file status is parsed from -v output."""
    args = ["storescu", "-v", "-nh", "-R", "-aec", called, "-aet", calling,
            "-to", "10", "-ta", "30", "-ts", "60", "-td", "60"]
    if option:
        args.append(option)
    args += [*extra, "127.0.0.1", str(port), *map(str, files)]
    p = run_dcmtk(args, timeout=timeout)
    out = p.stdout + p.stderr
    status: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if m := _SENDING.match(line):
            current = m.group(1)
            status[current] = "NoResponse"
        elif (m := _RESPONSE.match(line)) and current is not None:
            status[current] = m.group(1)
        elif m := _FAILED.match(line):
            status[m.group(1)] = "Failed"
    return StorescuRun(p.returncode, out, status)


# ------------------------------------------------------------------ reference SCP


@dataclass
class Received:
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    dataset: bytes


class RefStoreSCP:
    """pynetdicom Storage SCP on 127.0.0.1 that accepts the given SOP classes with
    every transfer syntax storescu can propose, answers Success and records the
    data set bytes exactly as received, in arrival order."""

    def __init__(self, sop_classes: list[str], transfer_syntaxes: list[str], ae_title: str = "NECTAR"):
        from pynetdicom import AE, evt, register_uid
        from pynetdicom.service_class import StorageServiceClass
        from pynetdicom.sop_class import Verification, uid_to_service_class

        for sc in sorted(set(sop_classes)):
            # retired or unknown storage classes (e.g. US retired, 1.2.840.10008.5.1.4.1.1.6)
            if uid_to_service_class(sc) is not StorageServiceClass:
                register_uid(sc, "NectarTest_" + sc.replace(".", "_"), StorageServiceClass)

        self.port = free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.maximum_pdu_size = 0
        ae.require_called_aet = True
        for sc in sorted(set(sop_classes)):
            ae.add_supported_context(sc, list(transfer_syntaxes))
        ae.add_supported_context(Verification)
        self._ae = ae
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event) -> int:
        req = event.request
        rec = Received(
            sop_class=str(req.AffectedSOPClassUID),
            sop_instance=str(req.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            dataset=req.DataSet.getvalue(),
        )
        with self._lock:
            self.received.append(rec)
        return 0x0000

    def close(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> RefStoreSCP:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
