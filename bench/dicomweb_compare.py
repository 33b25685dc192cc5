#!/usr/bin/env python3
"""STOW-RS, WADO-RS and QIDO-RS throughput of nectar beside Orthanc with its
DICOMweb plugin, in the same run.

Run it inside a private network namespace, as bench/compare does:

    unshare --net bash -c 'ip link set lo up && python3 bench/dicomweb_compare.py --rounds 3'

Each round starts one receiver with an empty data directory on 127.0.0.1,
stores the generated instances with STOW-RS (one client, requests of
--parts-per-request parts, keep-alive), then retrieves every instance once
with WADO-RS and checks its size. Then it searches with QIDO-RS for each study
by its UID, for the series of each study and for the instances of each
series, and checks the number of matches. Instances are copies of CT_small.dcm from
the pinned test corpus with fresh SOP Instance UIDs, --instances-per-study
instances per study. Figures are medians over the rounds; the ratio is
nectar's rate divided by Orthanc's. Both receivers flush each instance to
disk before they respond (Orthanc's SyncStorageArea is true by default
since 1.7.4). `--append-results` appends a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

import corpus  # noqa: E402
from nectar import Nectar  # noqa: E402
from orthanc import Orthanc  # noqa: E402

HTTP_TIMEOUT = 120


def make_instances(count: int, per_study: int) -> list[tuple[str, str, str, bytes]]:
    """(study, series, instance UID, Part 10 bytes) for `count` copies of CT_small.dcm."""
    template = pydicom.dcmread(corpus.path("pydicom/CT_small.dcm"))
    instances = []
    for index in range(count):
        if index % per_study == 0:
            study, series = generate_uid(), generate_uid()
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        buffer = io.BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        instances.append((study, series, template.SOPInstanceUID, buffer.getvalue()))
    return instances


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(port: int, root: str, instances, parts_per_request: int) -> float:
    """Stores every instance; returns the elapsed seconds."""
    bodies = [multipart([i[3] for i in instances[start:start + parts_per_request]])
              for start in range(0, len(instances), parts_per_request)]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    started = time.perf_counter()
    for body, content_type in bodies:
        connection.request("POST", f"{root}/studies", body=body,
                           headers={"Content-Type": content_type, "Accept": "application/dicom+json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"STOW-RS to port {port} failed with status {response.status}")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def retrieve(port: int, root: str, instances) -> float:
    """Retrieves every instance once; returns the elapsed seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    started = time.perf_counter()
    for study, series, uid, data in instances:
        connection.request("GET", f"{root}/studies/{study}/series/{series}/instances/{uid}",
                           headers={"Accept": accept})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or len(body) < len(data):
            raise RuntimeError(f"WADO-RS from port {port} failed: status {response.status}, {len(body)} bytes")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def searches(instances) -> list[tuple[str, int]]:
    """(path below the DICOMweb root, expected matches) of the QIDO-RS searches of one round."""
    series_sizes: dict[tuple[str, str], int] = {}
    for study, series, _, _ in instances:
        series_sizes[(study, series)] = series_sizes.get((study, series), 0) + 1
    studies = {study for study, _ in series_sizes}
    out = []
    for study in sorted(studies):
        out.append((f"/studies?StudyInstanceUID={study}", 1))
        out.append((f"/studies/{study}/series", sum(1 for s, _ in series_sizes if s == study)))
    for (study, series), size in sorted(series_sizes.items()):
        out.append((f"/studies/{study}/series/{series}/instances", size))
    return out


def search(port: int, root: str, instances) -> float:
    """Runs the searches of `searches`; returns the elapsed seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    started = time.perf_counter()
    for path, expected in searches(instances):
        connection.request("GET", f"{root}{path}", headers={"Accept": "application/dicom+json"})
        response = connection.getresponse()
        body = response.read()
        matches = len(json.loads(body)) if body else 0
        if response.status != 200 or matches != expected:
            raise RuntimeError(f"QIDO-RS {path} on port {port}: status {response.status}, "
                               f"{matches} matches, expected {expected}")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def run_round(name: str, work: Path, instances, parts_per_request: int) -> tuple[float, float, float]:
    if name == "nectar":
        server = Nectar(work / "data", work / "logs").start()
        port, root = server.http_port, "/dicomweb"
    else:
        server = Orthanc(work, dicomweb=True).start()
        port, root = server.http_port, "/dicom-web"
    try:
        stored = stow(port, root, instances, parts_per_request)
        return stored, retrieve(port, root, instances), search(port, root, instances)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--instances-per-study", type=int, default=100)
    parser.add_argument("--parts-per-request", type=int, default=50)
    parser.add_argument("--append-results", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    instances = make_instances(args.instances, args.instances_per_study)
    total_mb = sum(len(i[3]) for i in instances) / 1e6
    results: dict[str, list[tuple[float, float, float]]] = {"nectar": [], "orthanc": []}
    search_count = len(searches(instances))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    for round_number in range(args.rounds):
        for name in results:
            with tempfile.TemporaryDirectory(prefix=f"dicomweb-{name}-") as work:
                results[name].append(run_round(name, Path(work), instances, args.parts_per_request))
            stow_s, wado_s, qido_s = results[name][-1]
            print(f"round {round_number + 1} {name}: stow {stow_s:.2f} s, wado {wado_s:.2f} s, "
                  f"qido {qido_s:.2f} s", file=sys.stderr)
    load_after = Path("/proc/loadavg").read_text().split()[:3]

    def rate(name: str, phase: int) -> float:
        count = search_count if phase == 2 else args.instances
        return statistics.median(count / r[phase] for r in results[name])

    rows = []
    for phase, label in ((0, "STOW-RS store"), (1, "WADO-RS retrieve")):
        nectar_rate, orthanc_rate = rate("nectar", phase), rate("orthanc", phase)
        rows.append(f"| {label} | {nectar_rate:,.0f} | {orthanc_rate:,.0f} | "
                    f"{nectar_rate * total_mb / args.instances:.1f} | {orthanc_rate * total_mb / args.instances:.1f} | "
                    f"{nectar_rate / orthanc_rate:.2f} |")
    nectar_rate, orthanc_rate = rate("nectar", 2), rate("orthanc", 2)
    rows.append(f"| QIDO-RS search (searches/s) | {nectar_rate:,.1f} | {orthanc_rate:,.1f} | - | - | "
                f"{nectar_rate / orthanc_rate:.2f} |")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join(["bench/dicomweb_compare.py", *sys.argv[1:]])
    section = "\n".join([
        "",
        f"## DICOMweb: STOW-RS, WADO-RS and QIDO-RS, nectar and Orthanc ({date})",
        "",
        f"Written by `{command}` (inside `unshare --net` with lo up). Date: {date}. "
        f"Duration {(time.monotonic() - started) / 60:.1f} min. Load average {' '.join(load_before)} before, "
        f"{' '.join(load_after)} after. Machine: {platform.machine()}, nproc {len(__import__('os').sched_getaffinity(0))}.",
        "",
        f"{args.instances} copies of CT_small.dcm ({total_mb:.1f} MB in all), {args.instances_per_study} per study, "
        f"stored with STOW-RS in requests of {args.parts_per_request} parts over one keep-alive connection, then "
        "each retrieved once with WADO-RS (instance level), then "
        f"{search_count} QIDO-RS searches: each study by its UID, the series of each study and the instances "
        "of each series, each checked for its number of matches. One Python client on the same cores as the receiver. "
        f"Medians over {args.rounds} rounds; each round starts the receiver with an empty data directory. "
        "Both receivers make each instance durable before they respond: nectar flushes the parts of a request "
        "together (one msync per segment per batch), Orthanc writes and syncs each instance on its own "
        "(SyncStorageArea, true by default since Orthanc 1.7.4). "
        "\"nectar/Orthanc\" above 1 means nectar was faster.",
        "",
        "| phase | nectar instances/s | Orthanc instances/s | nectar MB/s | Orthanc MB/s | nectar/Orthanc |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        *([f"", f"Note: {args.note}"] if args.note else []),
        "",
    ])
    print(section)
    if args.append_results:
        with open(REPO / "bench" / "RESULTS.md", "a") as results_file:
            results_file.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
