"""CPU time and member processes of one receiver during a run.

A receiver moved into a cgroup of its own has its CPU time counted in
nanoseconds (cgroup v1 cpuacct.usage) or microseconds (cgroup v2 cpu.stat),
including threads and child processes that exited during the run. /proc gives
CPU time in clock ticks (10 ms on most kernels): a LARGE run of 200 instances
costs nectar about 0.15 s, so ticks alone would leave its figure uncertain by
several percent. Where no cgroup can be made (no permission, or a cgroup v2
parent that contains processes itself), the /proc process tree is used instead.
"""

import os
import time

from . import procs

V1_CPUACCT = "/sys/fs/cgroup/cpuacct"
V2_ROOT = "/sys/fs/cgroup"

TICKS_METHOD = f"/proc utime + stime in clock ticks of {1000 // procs.CLOCK_TICKS} ms"


def _own_cgroup(controller):
    """Return this process's cgroup path for a v1 controller, or the v2 path with controller None."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            names = controllers.split(",") if controllers else []
            if (controller is None and not controllers) or controller in names:
                return path
    return None


def _make_cgroup(pid):
    """Create a cgroup, move pid into it and return (directory, kind), or (None, None) when that fails."""
    candidates = []
    if os.path.isfile(os.path.join(V1_CPUACCT, "cpuacct.usage")):
        candidates.append((V1_CPUACCT, _own_cgroup("cpuacct"), "v1"))
    if os.path.isfile(os.path.join(V2_ROOT, "cgroup.controllers")):
        candidates.append((V2_ROOT, _own_cgroup(None), "v2"))
    for root, own, kind in candidates:
        if own is None:
            continue
        directory = os.path.join(root, own.lstrip("/"), f"nectar-bench-{pid}")
        try:
            os.mkdir(directory)
        except OSError:
            continue
        try:
            with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                f.write(str(pid))
            return directory, kind
        except OSError:
            _remove(directory)
    return None, None


def _remove(directory, timeout_s=2.0):
    """Remove an emptied cgroup. Members that are still exiting get timeout_s seconds to leave."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                print(f"compare: could not remove cgroup {directory}", flush=True)
                return
            time.sleep(0.05)


class Account:
    """CPU seconds and process list of the receiver started as pid."""

    def __init__(self, pid):
        self.pid = pid
        self.directory, self.kind = _make_cgroup(pid)

    @property
    def method(self):
        if self.kind == "v1":
            return "cgroup v1 cpuacct.usage in nanoseconds"
        if self.kind == "v2":
            return "cgroup v2 cpu.stat usage_usec in microseconds"
        return TICKS_METHOD

    def cpu_s(self):
        """CPU seconds (user + system) used by the receiver's processes so far."""
        if self.kind == "v1":
            with open(os.path.join(self.directory, "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        if self.kind == "v2":
            with open(os.path.join(self.directory, "cpu.stat")) as f:
                for line in f:
                    name, value = line.split()
                    if name == "usage_usec":
                        return int(value) / 1e6
        return procs.tree_cpu_s(self.pid)

    def pids(self):
        """PIDs of the receiver and its descendants."""
        if self.directory is None:
            return procs.tree_pids(self.pid)
        try:
            with open(os.path.join(self.directory, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def close(self):
        """Remove the cgroup once the receiver is stopped."""
        if self.directory is not None:
            _remove(self.directory)
            self.directory = None
