"""Machine ceilings measured in the same run: loopback TCP and sequential writes.

Rates are in MB/s with MB = 10^6 bytes, as nectar-load reports them.
"""

import os
import socket
import threading
import time

MIB = 1 << 20


def loopback_tcp_mb_per_s(total_bytes):
    """Send total_bytes over one TCP stream on 127.0.0.1 and return the receiver's rate.

    A Python sender and receiver thread in one process; both release the GIL
    in the socket calls. iperf3 is not used.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    result = {}

    def receive():
        conn, _ = listener.accept()
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        received = 0
        start = time.perf_counter()
        while received < total_bytes:
            n = conn.recv_into(view)
            if n == 0:
                break
            received += n
        result["elapsed"] = time.perf_counter() - start
        result["received"] = received
        conn.close()

    thread = threading.Thread(target=receive)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as sender:
        block = bytes(MIB)
        for _ in range(total_bytes // MIB):
            sender.sendall(block)
    thread.join(timeout=120)
    listener.close()
    if result.get("received") != total_bytes:
        raise RuntimeError(f"loopback test received {result.get('received')} of {total_bytes} bytes")
    return total_bytes / 1e6 / result["elapsed"], "Python socket pair, 1 stream, 1 MiB sends"


def sequential_write_mb_per_s(directory, total_bytes, sync_every_bytes=None, writers=1):
    """Write total_bytes in 1 MiB blocks with os.write, split over `writers` new files
    in directory written at once by as many threads.

    Each writer calls fdatasync every sync_every_bytes bytes if given, and always once
    at the end. The rate includes that last fdatasync. The files are removed.
    """
    block = os.urandom(MIB)
    share = total_bytes // writers // MIB * MIB
    paths = [os.path.join(directory, f"ceiling-write-{i}.tmp") for i in range(writers)]
    errors = []

    def write(path):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                written = since_sync = 0
                while written < share:
                    written += os.write(fd, block)
                    since_sync += MIB
                    if sync_every_bytes and since_sync >= sync_every_bytes:
                        os.fdatasync(fd)
                        since_sync = 0
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(path,)) for path in paths]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)
    if errors:
        raise errors[0]
    return share * writers / 1e6 / elapsed


def measure_once(directory, quick):
    """Measure each ceiling once and return a list of (name, MB/s, method).

    compare calls this before every round, so that the ceilings see the disk as
    the runs they are compared with do. On a shared virtual disk the write rates
    changed by a factor of three within minutes.
    """
    scale = 8 if quick else 1
    tcp_bytes = 2_000_000_000 // scale // MIB * MIB
    write_bytes = (1 << 30) // scale
    tcp, tcp_method = loopback_tcp_mb_per_s(tcp_bytes)
    write_method = f"{write_bytes // MIB} MiB in 1 MiB os.write calls"
    return [
        ("loopback TCP, 1 stream", tcp, f"{tcp_method}, {tcp_bytes / 1e9:.1f} GB"),
        ("sequential write, one fdatasync at the end", sequential_write_mb_per_s(directory, write_bytes),
         write_method),
        ("sequential write, fdatasync every 16 MiB",
         sequential_write_mb_per_s(directory, write_bytes, sync_every_bytes=16 * MIB), write_method),
        ("4 sequential writes at once, each with an fdatasync every 2 MiB",
         sequential_write_mb_per_s(directory, write_bytes, sync_every_bytes=2 * MIB, writers=4),
         f"{write_method}, 4 files and threads"),
    ]


def merge(measurements):
    """Turn the lists of measure_once into a list of (name, [MB/s per round], method)."""
    rows = {}
    for measured in measurements:
        for name, rate, method in measured:
            rows.setdefault(name, (name, [], method))[1].append(rate)
    return list(rows.values())
