"""Driving the nectar binary: `serve` as a managed child process, `fsck`, `export`.

The binary is $NECTAR_BIN, else target/release/nectar in this repository.
Everything listens on 127.0.0.1 only and every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from peers import free_port

REPO = Path(__file__).resolve().parent.parent
# nectar preallocates whole segment files (256 MiB by default); tests use small ones
# (which also makes the larger tests roll over to new segments) unless they pass
# --segment-size-mib themselves.
TEST_SEGMENT_MIB = "16"
HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 300.0


def nectar_bin() -> Path:
    return Path(os.environ.get("NECTAR_BIN") or REPO / "target" / "release" / "nectar")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for nectar: no stray NECTAR_* settings from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NECTAR_")}
    env["NECTAR_LOG"] = os.environ.get("NECTAR_LOG", "info")
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(extra or {})
    return env


class Nectar:
    """One `nectar serve` process. start() picks fresh ports each time, so a data
    dir can be served again after a kill without waiting for the old ports."""

    def __init__(self, data_dir: Path, log_dir: Path, args: list[str] | tuple = (),
                 ae_title: str = "NECTAR", env: dict[str, str] | None = None, use_env_config: bool = False):
        self.binary = nectar_bin()
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.args = list(args)
        self.ae_title = ae_title
        self.env = env or {}
        self.use_env_config = use_env_config
        self.proc: subprocess.Popen | None = None
        self.dimse_port = 0
        self.http_port = 0
        self.starts = 0
        self.log_path: Path | None = None

    # -- lifecycle

    def command(self) -> tuple[list[str], dict[str, str]]:
        settings = {
            "data-dir": str(self.data_dir),
            "ae-title": self.ae_title,
            "dimse-port": str(self.dimse_port),
            "http-port": str(self.http_port),
            "bind": "127.0.0.1",
        }
        if "--segment-size-mib" not in self.args:
            settings["segment-size-mib"] = TEST_SEGMENT_MIB
        if self.use_env_config:
            env = {"NECTAR_" + k.upper().replace("-", "_"): v for k, v in settings.items()}
            return [str(self.binary), "serve", *self.args], clean_env({**env, **self.env})
        flags = [x for k, v in settings.items() for x in (f"--{k}", v)]
        return [str(self.binary), "serve", *flags, *self.args], clean_env(self.env)

    def start(self, wait: bool = True) -> Nectar:
        assert not self.running, "already running"
        if not self.binary.is_file():
            raise FileNotFoundError(f"nectar binary not found at {self.binary}: build it "
                                    "(cargo build --release -p nectar-engine) or set NECTAR_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.dimse_port, self.http_port = free_port(), free_port()
        while self.http_port == self.dimse_port:
            self.http_port = free_port()
        self.starts += 1
        self.log_path = self.log_dir / f"nectar-serve-{self.starts}.log"
        cmd, env = self.command()
        with open(self.log_path, "wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        if wait:
            self.wait_healthy()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"nectar serve exited with {self.proc.returncode} before /health "
                                     f"answered\n{self.log_tail()}")
            try:
                status, _ = self.http_get("/health", timeout=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (OSError, urllib.error.URLError) as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"nectar /health not 200 within {timeout}s (last: {last})\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None if still running after timeout."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; SIGKILL after the deadline and fail."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            raise AssertionError(f"nectar did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")
        return rc

    def kill(self) -> None:
        """SIGKILL (no chance to flush) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text("utf-8", "replace").splitlines()
        return f"--- {self.log_path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])

    # -- observability

    def metrics(self) -> dict[str, float]:
        """Prometheus text -> {metric name: sum over all label sets}."""
        status, text = self.http_get("/metrics")
        assert status == 200, f"/metrics answered HTTP {status}"
        return parse_metrics(text)


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            name, rest = line.split("{", 1)[0], line[line.rindex("}") + 1 :].split()
        else:
            name, *rest = line.split()
        if not rest:
            continue
        value = rest[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


# ------------------------------------------------------------------------ CLI


@dataclass
class Fsck:
    returncode: int
    report: dict
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.report.get("ok") is True


def fsck(data_dir: Path, timeout: float = CLI_TIMEOUT) -> Fsck:
    p = subprocess.run([str(nectar_bin()), "fsck", "--data-dir", str(data_dir), "--json"],
                       capture_output=True, text=True, timeout=timeout, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    try:
        report = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"nectar fsck --json printed no single JSON object ({e}); rc={p.returncode}\n"
                             f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}") from e
    if not isinstance(report, dict):
        raise AssertionError(f"nectar fsck --json printed {type(report).__name__}, not an object")
    return Fsck(p.returncode, report, p.stdout, p.stderr)


FSCK_KEYS = ("records", "instances", "corrupt", "missing_from_manifest", "dangling_in_manifest",
             "torn_tail_bytes", "ok")


def count(value) -> int:
    """fsck reports some findings as a number or as the list of them."""
    return len(value) if isinstance(value, (list, dict)) else int(value)


def assert_fsck_clean(data_dir: Path, instances: int | None = None) -> Fsck:
    r = fsck(data_dir)
    missing = [k for k in FSCK_KEYS if k not in r.report]
    assert not missing, f"fsck --json lacks keys {missing}: {r.report}"
    assert r.returncode == 0, f"fsck exit {r.returncode}: {r.report}\n{r.stderr[-2000:]}"
    assert r.report["ok"] is True, r.report
    for key in ("corrupt", "missing_from_manifest", "dangling_in_manifest"):
        assert count(r.report[key]) == 0, f"fsck {key}: {r.report}"
    if instances is not None:
        assert r.report["instances"] == instances, f"fsck counts {r.report['instances']} instances, expected {instances}: {r.report}"
    return r


@dataclass
class Export:
    returncode: int
    stdout: str
    stderr: str
    out_dir: Path

    def files(self) -> dict[str, Path]:
        """SOP Instance UID (from the file name) -> exported file."""
        return {p.name[: -len(".dcm")]: p for p in sorted(self.out_dir.glob("*.dcm"))}


def export(data_dir: Path, out_dir: Path, timeout: float = CLI_TIMEOUT) -> Export:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([str(nectar_bin()), "export", "--data-dir", str(data_dir), "--out", str(out_dir)],
                       capture_output=True, text=True, timeout=timeout, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"nectar export exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return Export(p.returncode, p.stdout, p.stderr, out_dir)
