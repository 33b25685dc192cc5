"""The receivers bench/compare drives, each started fresh for one run.

A receiver is started on its own ports with an empty temporary directory,
waits until it listens, and after the load reports how many instances it
stored. Settings other than the ones written here are each receiver's
defaults, except the maximum PDU length each one accepts, which is raised
towards nectar's default of 1 MiB where the receiver allows it.
"""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

from . import procs

# Seconds a receiver may take from start to listening.
READY_TIMEOUT_S = 60

# Durability of an instance when the receiver sends its C-STORE-RSP, with the source of that fact.
DURABILITY = {
    "nectar": "yes (flush before response)",
    "storescp": "no (no fsync)",
    "storescp-fork": "no (no fsync)",
    "dicom-storescp": "no (0.10.1 source: write_to_file, no fsync)",
    "orthanc": "yes (SyncStorageArea true, the default since 1.7.4)",
    "pynetdicom": "no (minimal handler, no fsync)",
    "nectar-no-events": "yes (flush before response)",
    "nectar-nats": "yes (flush before response)",
}

ALL_NAMES = list(DURABILITY)
# The receivers a run without --receivers compares; the nectar variants are opt-in.
DEFAULT_NAMES = ["nectar", "storescp", "storescp-fork", "dicom-storescp", "orthanc", "pynetdicom"]

# dcmtk 3.6.7 and Orthanc 1.10.1 stall at about 20 instances/s without
# TCP_NODELAY=1 in their environment (Nagle's algorithm meets delayed ACKs).
DCMTK_ENV = {"TCP_NODELAY": "1"}


class Receiver:
    """One started receiver: its process, ports, called AE title and output directory."""

    name = ""
    called_ae = ""

    def __init__(self, ctx, work_dir):
        self.ctx = ctx
        self.work_dir = work_dir
        self.data_dir = os.path.join(work_dir, "data")
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(work_dir, "receiver.log")
        self.port = procs.free_port()
        self.proc = None

    def start(self):
        self.proc = procs.start(self.argv(), env=self.env(), log_path=self.log_path, cwd=self.work_dir)
        self.wait_ready()

    def argv(self):
        raise NotImplementedError

    def env(self):
        return None

    def wait_ready(self):
        procs.wait_listening(self.proc, self.port, READY_TIMEOUT_S)

    def stored_count(self):
        """Return the number of stored instances; called after the load, before stop()."""
        return count_files(self.data_dir)

    def stop(self):
        """Stop the process; return its exit code."""
        return procs.stop(self.proc) if self.proc else None

    def stored_count_after_stop(self):
        """Return the stored count when only a stopped receiver can report it, else None."""
        return None

    def log_tail(self, lines=5):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except FileNotFoundError:
            return ""


def count_files(directory):
    total = 0
    for _root, _dirs, files in os.walk(directory):
        total += len(files)
    return total


class Nectar(Receiver):
    name = "nectar"
    called_ae = "NECTAR"

    def __init__(self, ctx, work_dir):
        super().__init__(ctx, work_dir)
        self.http_port = procs.free_port()

    def argv(self):
        argv = [
            self.ctx.nectar_bin, "serve",
            "--data-dir", self.data_dir,
            "--bind", "127.0.0.1",
            "--dimse-port", str(self.port),
            "--http-port", str(self.http_port),
            "--ae-title", self.called_ae,
        ]
        if self.ctx.profile:
            argv += ["--profile", self.ctx.profile_arg]
        if self.ctx.profile_cores:
            argv = ["taskset", "-c", self.ctx.profile_cores] + argv
        return argv

    def stored_count(self):
        return None

    def stored_count_after_stop(self):
        result = subprocess.run(
            [self.ctx.nectar_bin, "fsck", "--data-dir", self.data_dir, "--json"],
            capture_output=True, text=True, timeout=120,
        )
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"nectar fsck printed no JSON (exit {result.returncode}): {result.stderr.strip()}")
        if not report.get("ok"):
            raise RuntimeError(f"nectar fsck reported a problem: {result.stdout.strip()}")
        return report["instances"]


class NectarNoEvents(Nectar):
    """nectar with events off: no outbox rows, no study actors."""
    name = "nectar-no-events"

    def argv(self):
        return super().argv() + ["--no-events"]


class NectarNats(Nectar):
    """nectar publishing every event to a nats-server -js of its own (started
    beside it, so its CPU is not counted as nectar's)."""
    name = "nectar-nats"

    def __init__(self, ctx, work_dir):
        super().__init__(ctx, work_dir)
        self.nats_port = procs.free_port()
        self.nats = None

    def start(self):
        self.nats = procs.start(
            ["nats-server", "-a", "127.0.0.1", "-p", str(self.nats_port), "-js",
             "-sd", os.path.join(self.work_dir, "nats")],
            log_path=os.path.join(self.work_dir, "nats-server.log"), cwd=self.work_dir)
        procs.wait_listening(self.nats, self.nats_port, READY_TIMEOUT_S)
        super().start()

    def argv(self):
        return super().argv() + ["--nats-url", f"nats://127.0.0.1:{self.nats_port}"]

    def stop(self):
        code = super().stop()
        if self.nats:
            procs.stop(self.nats)
        return code


class Storescp(Receiver):
    name = "storescp"
    called_ae = "STORESCP"
    fork = False

    def argv(self):
        # /usr/bin/storescp explicitly: pynetdicom installs a Python script of the same name.
        argv = [
            "/usr/bin/storescp",
            "--fork" if self.fork else "--single-process",
            "-aet", self.called_ae,
            "+xa",
            "-pdu", "131072",  # the maximum dcmtk 3.6.7 accepts
            "-dhl",
            "-od", self.data_dir,
        ]
        return argv + [str(self.port)]

    def env(self):
        return DCMTK_ENV


class StorescpFork(Storescp):
    name = "storescp-fork"
    fork = True


class DicomStorescp(Receiver):
    name = "dicom-storescp"
    called_ae = "STORE-SCP"

    def argv(self):
        # --non-blocking serves associations concurrently; without it they are served one at a time.
        return [
            self.ctx.dicom_storescp_bin,
            "--non-blocking",
            "--max-pdu-length", "1048576",
            "-o", self.data_dir,
            "-p", str(self.port),
        ]


class Orthanc(Receiver):
    name = "orthanc"
    called_ae = "ORTHANC"

    def __init__(self, ctx, work_dir):
        super().__init__(ctx, work_dir)
        self.http_port = procs.free_port()
        self.config_path = os.path.join(work_dir, "orthanc.json")
        config = orthanc_config(self.port, self.http_port, self.data_dir)
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    def argv(self):
        return ["Orthanc", self.config_path]

    def env(self):
        return DCMTK_ENV

    def _get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.load(r)

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode} during start")
            try:
                self._get("/system")
                procs.wait_listening(self.proc, self.port, READY_TIMEOUT_S)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"GET /system got no response within {READY_TIMEOUT_S} s")

    def stored_count(self):
        return self._get("/statistics")["CountInstances"]


def orthanc_config(dicom_port, http_port, data_dir):
    """Return the Orthanc configuration: defaults except ports, directories, access and PDU length."""
    return {
        "Name": "bench-compare",
        "DicomAet": Orthanc.called_ae,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "StorageDirectory": os.path.join(data_dir, "storage"),
        "IndexDirectory": os.path.join(data_dir, "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "Plugins": [],
        "MaximumPduLength": 131072,  # the maximum Orthanc 1.10.1 accepts
    }


class Pynetdicom(Receiver):
    name = "pynetdicom"
    called_ae = "PYNETDICOM"

    def argv(self):
        script = os.path.join(os.path.dirname(__file__), "pynetdicom_scp.py")
        argv = [
            self.ctx.python, script,
            "--port", str(self.port),
            "--output-dir", self.data_dir,
            "--ae-title", self.called_ae,
            "--max-pdu", "1048576",
        ]
        for uid in self.ctx.template_syntaxes:
            argv += ["--transfer-syntax", uid]
        return argv


CLASSES = {cls.name: cls for cls in (Nectar, NectarNoEvents, NectarNats, Storescp, StorescpFork, DicomStorescp,
                                      Orthanc, Pynetdicom)}


def versions(ctx):
    """Return a version string per receiver, for the results page."""
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unknown ({e})"
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "unknown"

    import pynetdicom

    storescp = first_line(["/usr/bin/storescp", "--version"])
    return {
        "nectar": first_line([ctx.nectar_bin, "--version"]),
        "nectar-no-events": first_line([ctx.nectar_bin, "--version"]),
        "nectar-nats": first_line([ctx.nectar_bin, "--version"]) + ", " + first_line(["nats-server", "--version"]),
        "storescp": storescp,
        "storescp-fork": storescp,
        "dicom-storescp": first_line([ctx.dicom_storescp_bin, "--version"]),
        "orthanc": first_line(["Orthanc", "--version"]),
        "pynetdicom": f"pynetdicom {pynetdicom.__version__}",
    }


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


def parse_cores(text):
    """Return a taskset -c core list from a profile's `cores:` value such as `0-1`, `0,1` or `[0, 1]`."""
    value = text.strip().strip("[]").replace(" ", "")
    if not re.fullmatch(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*", value):
        raise ValueError(f"invalid cores value {text.strip()!r}: expected e.g. 0-1 or 0,1")
    return value
