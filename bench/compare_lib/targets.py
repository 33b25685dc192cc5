"""nectar's throughput targets, checked against the medians and ceilings of one run.

Each target is a ratio or a bound within the same run, so it can be checked on any
machine. A target whose receivers or workload did not run is left out.
"""

import statistics

# Receivers that keep instances in the page cache without fsync, and whose best
# instances/s nectar's small-8 is compared with.
SMALL_PEERS = ("storescp", "storescp-fork", "dicom-storescp")
SMALL_PEER_RATIO = 4.0
SMALL_ORTHANC_RATIO = 10.0
SMALL_CPU_US = 60.0
# CPU per instance of three receivers in the preliminary run that set SMALL_CPU_US
# (dcmtk storescu as the sender). The bound divided by a receiver's figure is
# checked against the same receiver in this run, so a slower or busier machine
# moves both sides of the ratio.
SMALL_CPU_PRELIMINARY_US = {"dicom-storescp": 550.0, "storescp": 700.0, "orthanc": 2800.0}
SMALL_P99_MS = 10.0
LARGE_STORESCP_RATIO = 1.0
LARGE_CEILING_SHARE = 0.8
# A durable receiver of large-4 can go no faster than the lower of the loopback TCP
# ceiling and a write ceiling with fdatasync. Both write ceilings are checked, by
# their names in ceilings.measure_once.
TCP_CEILING = "loopback TCP, 1 stream"
WRITE_CEILINGS = (
    "sequential write, fdatasync every 16 MiB",
    "4 sequential writes at once, each with an fdatasync every 2 MiB",
)


def _median(results, receiver, workload, field):
    values = [getattr(r, field) for r in results if r.receiver == receiver and r.workload == workload and r.ok]
    return statistics.median(values) if values else None


def _row(target, required, value, met):
    return f"| {target} | {required} | {value} | {'yes' if met else 'no'} |"


def small_rows(results):
    rows = []
    nectar = _median(results, "nectar", "small-8", "instances_per_s")
    if nectar is None:
        return rows
    peers = {name: _median(results, name, "small-8", "instances_per_s") for name in SMALL_PEERS}
    peers = {name: value for name, value in peers.items() if value}
    if peers:
        best = max(peers, key=peers.get)
        ratio = nectar / peers[best]
        rows.append(_row(f"small-8 instances/s against the best of {', '.join(peers)} ({best})",
                         f"{SMALL_PEER_RATIO:.0f}x", f"{ratio:.2f}x", ratio >= SMALL_PEER_RATIO))
    orthanc = _median(results, "orthanc", "small-8", "instances_per_s")
    if orthanc:
        ratio = nectar / orthanc
        rows.append(_row("small-8 instances/s against Orthanc", f"{SMALL_ORTHANC_RATIO:.0f}x", f"{ratio:.2f}x",
                         ratio >= SMALL_ORTHANC_RATIO))
    cpu = _median(results, "nectar", "small-8", "cpu_us_per_instance")
    rows.append(_row("small-8 nectar CPU per instance", f"at most {SMALL_CPU_US:.0f} µs", f"{cpu:.1f} µs",
                     cpu <= SMALL_CPU_US))
    rows += cpu_share_rows(results, cpu)
    p99_ms = _median(results, "nectar", "small-8", "p99_us") / 1000
    rows.append(_row("small-8 p99 latency", f"under {SMALL_P99_MS:.0f} ms", f"{p99_ms:.2f} ms", p99_ms < SMALL_P99_MS))
    return rows


def cpu_share_rows(results, cpu):
    """Return one row per peer: nectar's small-8 CPU per instance divided by the
    peer's in this run, against SMALL_CPU_US divided by the peer's preliminary figure."""
    rows = []
    for name, preliminary in SMALL_CPU_PRELIMINARY_US.items():
        peer = _median(results, name, "small-8", "cpu_us_per_instance")
        if not peer:
            continue
        allowed = SMALL_CPU_US / preliminary
        share = cpu / peer
        rows.append(_row(f"small-8 nectar CPU per instance against {name}'s ({peer:,.0f} µs)",
                         f"at most {allowed:.3f}x ({SMALL_CPU_US:.0f} of {preliminary:,.0f} µs)",
                         f"{share:.3f}x", share <= allowed))
    return rows


def large_rows(results, ceiling_rows):
    rows = []
    nectar = _median(results, "nectar", "large-4", "mb_per_s")
    if nectar is None:
        return rows
    storescp = _median(results, "storescp", "large-4", "mb_per_s")
    if storescp:
        ratio = nectar / storescp
        rows.append(_row("large-4 MB/s against storescp", f"{LARGE_STORESCP_RATIO:.0f}x", f"{ratio:.2f}x",
                         ratio >= LARGE_STORESCP_RATIO))
    ceilings = {name: statistics.median(rates) for name, rates, _method in ceiling_rows}
    if TCP_CEILING not in ceilings:
        return rows
    for name in WRITE_CEILINGS:
        if name in ceilings:
            allowed = min(ceilings[TCP_CEILING], ceilings[name])
            share = nectar / allowed
            rows.append(_row(f"large-4 MB/s against the lower of loopback TCP and \"{name}\" ({allowed:,.0f} MB/s)",
                             f"{LARGE_CEILING_SHARE:.0%}", f"{share:.0%}", share >= LARGE_CEILING_SHARE))
    return rows


def lines(results, ceiling_rows, quick):
    """Return the Markdown section of the targets this run can check, or no lines."""
    rows = small_rows(results) + large_rows(results, ceiling_rows)
    if not rows:
        return []
    out = ["## Targets", ""]
    if quick:
        out += ["A --quick run is one short round, so these verdicts are indicative only.", ""]
    out += ["nectar's medians in this run against its targets. A ratio is nectar's figure divided "
            "by the other's.", "",
            "| target | required | this run | met |", "| --- | --- | --- | --- |"] + rows + [""]
    return out
