"""Process control and /proc accounting for bench/compare.

CPU and memory are read from /proc so no third-party package is needed.
Every process started here is stopped by PID: SIGTERM, then SIGKILL.
"""

import os
import signal
import socket
import subprocess
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# Processes started through start() and not yet stopped, by PID.
_live = {}


def start(argv, env=None, log_path=None, cwd=None):
    """Start argv in its own session, with stdout and stderr to log_path."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    log = open(log_path or os.devnull, "ab")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    _live[proc.pid] = proc
    return proc


def stop(proc, grace_s=5.0):
    """Send SIGTERM to proc, SIGKILL after grace_s seconds; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)
    _live.pop(proc.pid, None)
    return proc.returncode


def stop_all():
    """Stop every process started through start() that is still recorded."""
    for proc in list(_live.values()):
        stop(proc)


def _read_stat(pid):
    """Return (ppid, utime+stime+cutime+cstime in ticks) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces; the fields after it start past the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, utime + stime + cutime + cstime


def _children_map():
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read_stat(int(name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(name))
    return children


def tree_pids(pid):
    """Return pid and all its descendants, zombies included."""
    children = _children_map()
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        stack.extend(children.get(p, []))
    return pids


def tree_cpu_s(pid):
    """Return CPU seconds (user + system) of pid and its descendants.

    Each process contributes its own time plus that of the children it has
    reaped (cutime, cstime). Exited children that are not reaped yet are
    zombies and still have /proc/PID/stat, so they are counted there.
    """
    ticks = 0
    for p in tree_pids(pid):
        stat = _read_stat(p)
        if stat is not None:
            ticks += stat[1]
    return ticks / CLOCK_TICKS


def _rss_anon_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class RssSampler:
    """Sample the summed RssAnon of a set of processes every interval_s seconds and keep the maximum.

    pids is called at every sample and returns the PIDs to sum.
    """

    def __init__(self, pids, interval_s=0.05):
        self.pids = pids
        self.interval_s = interval_s
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = sum(_rss_anon_kib(p) for p in self.pids())
            self.peak_kib = max(self.peak_kib, total)
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def listening_ports():
    """Return the TCP ports in LISTEN state in this network namespace."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def wait_listening(proc, port, timeout_s):
    """Wait until some process listens on port; raise RuntimeError if proc exits or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening on port {port}")
        if port in listening_ports():
            return
        time.sleep(0.05)
    raise RuntimeError(f"not listening on port {port} after {timeout_s} s")


def free_port():
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
