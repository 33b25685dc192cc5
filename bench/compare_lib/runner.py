"""One benchmark run: start a receiver, drive it with nectar-load, check and measure it."""

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from . import procs
from .account import Account
from .receivers import CLASSES, remove_tree

# Seconds nectar-load may run before it is killed, and its per-response limit.
LOAD_DEADLINE_S = 600
LOAD_RESPONSE_TIMEOUT_S = 60


@dataclass
class Workload:
    name: str
    template: str
    instances: int
    studies: int
    associations: int


@dataclass
class RunResult:
    receiver: str
    workload: str
    round: int
    ok: bool = False
    reason: str = ""
    stored: int = None
    instances_per_s: float = 0.0
    mb_per_s: float = 0.0
    p50_us: int = 0
    p99_us: int = 0
    dataset_bytes: int = 0
    cpu_s: float = 0.0
    load_cpu_s: float = 0.0
    peak_anon_mib: float = 0.0
    cpu_method: str = ""
    memory_interval_ms: int = 0
    exit_code: int = None
    receiver_argv: list = field(default_factory=list)
    load_argv: list = field(default_factory=list)

    @property
    def cpu_us_per_instance(self):
        return self.cpu_s * 1e6 / max(self.stored or 0, 1)

    @property
    def cpu_s_per_gb(self):
        return self.cpu_s / (self.dataset_bytes / 1e9) if self.dataset_bytes else 0.0


def load_argv(ctx, workload, port, called_ae):
    return [
        ctx.nectar_load_bin,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--called-ae", called_ae,
        "--associations", str(workload.associations),
        "--instances", str(workload.instances),
        "--studies", str(workload.studies),
        "--template", workload.template,
        "--timeout", str(LOAD_RESPONSE_TIMEOUT_S),
        "--json",
    ]


def wait_children_done(pid, timeout_s=5.0):
    """Wait until every descendant of pid has exited (zombies count as exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = []
        for p in procs.tree_pids(pid)[1:]:
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if state not in (b"Z", b"X"):
                running.append(p)
        if not running:
            return
        time.sleep(0.05)


def run_one(ctx, receiver_name, workload, round_no):
    """Run one receiver against one workload; a receiver or load failure goes into RunResult.reason, not an exception."""
    result = RunResult(receiver=receiver_name, workload=workload.name, round=round_no)
    # A receiver that does not fsync leaves its data to the kernel's writeback;
    # without this, that writeback would compete with the next run's disk I/O.
    os.sync()
    work_dir = tempfile.mkdtemp(prefix=f"{receiver_name}-", dir=ctx.tmp_root)
    receiver = CLASSES[receiver_name](ctx, work_dir)
    account = None
    try:
        result.receiver_argv = receiver.argv()
        receiver.start()
        pid = receiver.proc.pid
        argv = load_argv(ctx, workload, receiver.port, receiver.called_ae)
        result.load_argv = argv

        account = Account(pid)
        result.cpu_method = account.method
        # Listing a cgroup's members is cheap, while walking /proc for the process tree is not.
        interval_s = 0.01 if account.directory else 0.05
        result.memory_interval_ms = round(interval_s * 1000)
        cpu_before = account.cpu_s()
        with procs.RssSampler(account.pids, interval_s) as sampler:
            try:
                load = subprocess.run(argv, capture_output=True, text=True, timeout=LOAD_DEADLINE_S)
            except subprocess.TimeoutExpired:
                result.reason = f"nectar-load did not finish within {LOAD_DEADLINE_S} s and was killed"
                return result
            wait_children_done(pid)
        result.cpu_s = account.cpu_s() - cpu_before
        result.peak_anon_mib = sampler.peak_kib / 1024

        try:
            report = json.loads(load.stdout)
        except json.JSONDecodeError:
            tail = load.stderr.strip().splitlines()[-3:]
            result.reason = f"nectar-load exited {load.returncode} without JSON: {' | '.join(tail)}"
            return result
        result.instances_per_s = report["instances_per_s"]
        result.mb_per_s = report["mb_per_s"]
        result.p50_us = report["latency_us"]["p50"]
        result.p99_us = report["latency_us"]["p99"]
        result.dataset_bytes = report["dataset_bytes"]
        result.load_cpu_s = report["cpu_s"]
        if load.returncode != 0 or not report["ok"]:
            samples = (report.get("association_errors") or []) + (report.get("failure_samples") or [])
            result.reason = (
                f"nectar-load exited {load.returncode}: {report['successes']} success, "
                f"{report['warnings']} warning, {report['failures']} failure, "
                f"{report['not_sent']} not sent; {'; '.join(samples[:2])}"
            )
            return result

        result.stored = receiver.stored_count()
    except Exception as e:  # noqa: BLE001 - any receiver error fails this run only
        result.reason = f"{type(e).__name__}: {e}"
        log = receiver.log_tail()
        if log:
            result.reason += f" (receiver log: {log.splitlines()[-1]})"
        return result
    finally:
        result.exit_code = receiver.stop()
        if account is not None:
            account.close()
        if not result.reason:
            try:
                after = receiver.stored_count_after_stop()
                if after is not None:
                    result.stored = after
            except Exception as e:  # noqa: BLE001
                result.reason = f"counting stored instances failed: {e}"
        if not result.reason and result.stored != workload.instances:
            result.reason = f"stored {result.stored} of {workload.instances} instances"
        result.ok = not result.reason
        if ctx.keep_failed and not result.ok:
            print(f"compare: kept {work_dir} of the failed run", flush=True)
        else:
            remove_tree(work_dir)
    return result
