"""Markdown tables and machine description for bench/compare."""

import os
import platform
import statistics
import subprocess

from .receivers import DURABILITY


def _run_text(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine(directory):
    """Return lines describing the machine and the filesystem of directory."""
    lines = [f"- nproc: {os.cpu_count()}"]
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    if model:
        lines.append(f"- CPU: {model}")
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                lines.append(f"- MemTotal: {kib / 1024 / 1024:.1f} GiB")
    lines.append(f"- kernel: {platform.release()}")
    df = _run_text(["df", "-T", directory])
    if df:
        lines.append(f"- filesystem of the data directories (`df -T {directory}`): `{df.splitlines()[-1]}`")
    lsblk = _run_text(["lsblk", "-d", "-o", "NAME,ROTA,MODEL"])
    if lsblk:
        lines.append("- disks (`lsblk -d -o NAME,ROTA,MODEL`): " + "; ".join(
            f"`{' '.join(l.split())}`" for l in lsblk.splitlines()[1:]))
    return lines


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _fmt(x, digits=0):
    return f"{x:,.{digits}f}"


def workload_table(workload, receivers, results):
    """Return the Markdown table of one workload: one row per receiver, medians over successful runs."""
    header = (
        "| receiver | runs ok | instances/s median (min–max) | MB/s | p99 latency ms | "
        "receiver CPU µs/instance | CPU s/GB | peak anon MiB | durable before response? | "
        "nectar/receiver |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    medians = {}
    for name in receivers:
        ok = [r for r in results if r.workload == workload and r.receiver == name and r.ok]
        if ok:
            medians[name] = statistics.median(r.instances_per_s for r in ok)
    rows = [header]
    for name in receivers:
        runs = [r for r in results if r.workload == workload and r.receiver == name]
        if not runs:
            continue
        ok = [r for r in runs if r.ok]
        if not ok:
            rows.append(f"| {name} | 0/{len(runs)} | failed | | | | | | {DURABILITY[name]} | |")
            continue
        ips = [r.instances_per_s for r in ok]
        ratio = ""
        if "nectar" in medians and name in medians:
            ratio = f"{medians['nectar'] / medians[name]:.2f}"
        rows.append(
            f"| {name} | {len(ok)}/{len(runs)} "
            f"| {_fmt(statistics.median(ips))} ({_fmt(min(ips))}–{_fmt(max(ips))}) "
            f"| {_fmt(statistics.median(r.mb_per_s for r in ok), 1)} "
            f"| {_fmt(statistics.median(r.p99_us for r in ok) / 1000, 2)} "
            f"| {_fmt(statistics.median(r.cpu_us_per_instance for r in ok))} "
            f"| {_fmt(statistics.median(r.cpu_s_per_gb for r in ok), 1)} "
            f"| {_fmt(max(r.peak_anon_mib for r in ok), 1)} "
            f"| {DURABILITY[name]} | {ratio} |"
        )
    return "\n".join(rows)


def runs_table(results):
    """Return the Markdown table of every run, in the order they ran."""
    rows = [
        "| round | workload | receiver | ok | stored | instances/s | MB/s | p50 ms | p99 ms | "
        "receiver CPU s | nectar-load CPU s | peak anon MiB | exit | failure |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        reason = r.reason.replace("|", "/")
        stored = "?" if r.stored is None else str(r.stored)
        rows.append(
            f"| {r.round} | {r.workload} | {r.receiver} | {'yes' if r.ok else 'no'} | {stored} "
            f"| {_fmt(r.instances_per_s)} | {_fmt(r.mb_per_s, 1)} | {_fmt(r.p50_us / 1000, 2)} "
            f"| {_fmt(r.p99_us / 1000, 2)} | {r.cpu_s:.3f} | {r.load_cpu_s:.2f} "
            f"| {_fmt(r.peak_anon_mib, 1)} | {r.exit_code} | {reason} |"
        )
    return "\n".join(rows)
