"""Event peers for the tests: a managed `nats-server -js`, a JetStream reader
(nats-py, independent of nectar's client), and a reader of nectar's
server-sent-events stream. Everything binds 127.0.0.1 and every wait has a
deadline."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from peers import free_port

STREAM = "NECTAR_EVENTS"
SUBJECTS = "nectar.events.>"
START_TIMEOUT = 20.0


@dataclass
class Event:
    """One delivered event: its transport position and the CloudEvent."""
    position: int
    cloud: dict

    @property
    def type(self) -> str:
        return self.cloud["type"]

    @property
    def id(self) -> str:
        return self.cloud["id"]

    @property
    def data(self) -> dict:
        return self.cloud["data"]


class NatsServer:
    """`nats-server -js` on a loopback port, with its own store directory.
    stop() and start() again keep the port and the stored streams."""

    def __init__(self, work_dir: Path, extra_args: tuple = (), connect_options: dict | None = None):
        """`extra_args` go to nats-server (authentication, TLS); `connect_options`
        to nats-py's connect for the test's own reader."""
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.extra_args = list(extra_args)
        self.connect_options = connect_options or {}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        log = open(self.work_dir / "nats-server.log", "ab")
        self.proc = subprocess.Popen(
            ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.work_dir / "store"),
             *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nats-server did not listen within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def stream_events(self, timeout: float = 5.0) -> list[Event]:
        """Every message in the events stream, in stream order."""
        return asyncio.run(_read_stream(self.url, timeout, self.connect_options))


async def _read_stream(url: str, timeout: float, options: dict) -> list[Event]:
    client = await nats.connect(url, connect_timeout=5, allow_reconnect=False, **options)
    try:
        js = client.jetstream()
        try:
            info = await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return []
        total = info.state.messages
        if total == 0:
            return []
        sub = await js.pull_subscribe(SUBJECTS, durable=None, stream=STREAM,
                                      config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(events) < total and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(min(256, total - len(events)), timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                events.append(Event(msg.metadata.sequence.stream, json.loads(msg.data)))
                await msg.ack()
        await sub.unsubscribe()
        return events
    finally:
        await client.close()


def read_sse(base_url: str, after: int | None = None, last_event_id: int | None = None,
             want: int | None = None, idle: float = 3.0, limit: float = 30.0) -> list[Event]:
    """Reads nectar's `/events` until `want` events arrived, or `idle` seconds
    pass without one, or `limit` seconds in all."""
    url = base_url + "/events" + (f"?after={after}" if after is not None else "")
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[Event] = []
    deadline = time.monotonic() + limit
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=idle) as response:
        fields: dict[str, str] = {}
        while time.monotonic() < deadline and (want is None or len(events) < want):
            try:
                line = response.readline()
            except (TimeoutError, socket.timeout):
                break
            if not line:
                break
            line = line.decode().rstrip("\n")
            if line == "":
                if "data" in fields:
                    events.append(Event(int(fields["id"]), json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value[1:] if value.startswith(" ") else value
    return events


def entries(instances) -> list[str]:
    """`<Series Instance UID>/<SOP Instance UID>` of test instances, sorted."""
    from dicomdata import read
    out = []
    for inst in instances:
        ds = read(inst.path)
        out.append(f"{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}")
    return sorted(out)


def wait_for(predicate, timeout: float, interval: float = 0.5):
    """Polls predicate() until it returns a truthy value; returns the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it:
    (ca.pem, server.pem, server-key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca-key.pem", "ca.pem", "server-key.pem",
                                                          "server.csr", "server.pem"))
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
            "-days", "1", "-subj", "/CN=nectar test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return ca, cert, key
