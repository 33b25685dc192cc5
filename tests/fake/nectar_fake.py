#!/usr/bin/env python3
"""A slow, simple stand-in for the nectar binary, written to the same CLI and wire
contract, used only to check the test suite itself (`NECTAR_BIN=tests/fake/nectar_fake.py
python3 -m pytest tests/`). It is not part of the product and tests/run never uses it.

Storage: one Part 10 file per instance in DATA_DIR/instances, written to a temp file,
fsynced and renamed before the C-STORE-RSP; fsck checks every file parses.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pdu as P  # noqa: E402

TS_SUPPORTED = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5",
} | {f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93, 100, 101, 102, 103,
                                            104, 105, 106, 107, 108, 201, 202, 203)}
STORAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.", "1.2.840.10008.5.1.4.34.", "1.2.840.10008.5.1.4.38.",
                    "1.2.840.10008.5.1.4.43.", "1.2.840.10008.5.1.4.44.", "1.2.840.10008.5.1.4.45.")

METRICS = {"nectar_associations_total": 0, "nectar_instances_stored_total": 0,
           "nectar_associations_rejected_total": 0}
LOCK = threading.Lock()


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} fake-nectar: {msg}", file=sys.stderr, flush=True)


def env_default(name: str, default=None):
    return os.environ.get("NECTAR_" + name.upper().replace("-", "_"), default)


def bump(name: str) -> None:
    with LOCK:
        METRICS[name] += 1


class Abort(Exception):
    def __init__(self, reason: int):
        self.reason = reason


def rx(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        c = sock.recv(n - len(buf))
        if not c:
            raise EOFError
        buf += c
    return buf


def parse_rq(body: bytes):
    if len(body) < 68:
        raise Abort(6)
    called, calling = body[4:20], body[20:36]
    pos, contexts, max_pdu = 68, [], 0
    while pos < len(body):
        if pos + 4 > len(body):
            raise Abort(6)
        t, _, n = struct.unpack_from(">BBH", body, pos)
        item = body[pos + 4 : pos + 4 + n]
        if len(item) != n:
            raise Abort(6)
        if t == 0x20:
            cid, sp, abstract, tss = item[0], 4, None, []
            while sp < len(item):
                st, _, sn = struct.unpack_from(">BBH", item, sp)
                v = item[sp + 4 : sp + 4 + sn]
                if len(v) != sn:
                    raise Abort(6)
                v = v.rstrip(b"\x00 ").decode()
                if st == 0x30:
                    abstract = v
                elif st == 0x40:
                    tss.append(v)
                sp += 4 + sn
            contexts.append((cid, abstract, tss))
        elif t == 0x50:
            sp = 0
            while sp + 4 <= len(item):
                st, _, sn = struct.unpack_from(">BBH", item, sp)
                if st == 0x51:
                    (max_pdu,) = struct.unpack_from(">I", item, sp + 4)
                sp += 4 + sn
        pos += 4 + n
    return called, calling, contexts, max_pdu


def build_ac(rq_body: bytes, results, max_pdu: int) -> bytes:
    body = rq_body[:68]
    body += P._item(0x10, P.APPLICATION_CONTEXT.encode())
    for cid, res, ts in results:
        body += P._item(0x21, bytes([cid, 0, res, 0]) + P._item(0x40, (ts or P.IMPLICIT_LE).encode()))
    body += P._item(0x50, P._item(0x51, struct.pack(">I", max_pdu)) +
                    P._item(0x52, P.IMPLEMENTATION_CLASS_UID.encode()))
    return P.pdu(P.A_ASSOCIATE_AC, body)


def find_sop_instance(raw: bytes, ts: str) -> str | None:
    from pydicom.filereader import read_dataset
    data = raw
    if ts == P.DEFLATED_LE:
        data = zlib.decompress(raw, -15)
    implicit = ts == P.IMPLICIT_LE
    little = ts != P.EXPLICIT_BE
    ds = read_dataset(io.BytesIO(data), implicit, little, stop_when=lambda tag, vr, length: tag > 0x00080018)
    el = ds.get((0x0008, 0x0018))
    return str(el.value).rstrip("\x00 ") if el is not None and el.value else None


def store(data_dir: Path, sop_class: str, sop_inst: str, ts: str, raw: bytes) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.filebase import DicomBytesIO
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_inst
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = P.IMPLEMENTATION_CLASS_UID
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    inst = data_dir / "instances"
    inst.mkdir(parents=True, exist_ok=True)
    tmp = inst / f".{sop_inst}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(b"\x00" * 128 + b"DICM" + buf.getvalue() + raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, inst / f"{sop_inst}.dcm")
    fd = os.open(inst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


class Server:
    def __init__(self, a):
        self.a = a
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        self.stopping = threading.Event()

    def handle(self, sock: socket.socket) -> None:
        a = self.a
        counted = False
        try:
            sock.settimeout(a.artim_timeout)
            try:
                head = rx(sock, 6)
            except (socket.timeout, TimeoutError):
                log("ARTIM expired, closing")
                return
            t, _, n = struct.unpack(">BBI", head)
            if t not in P.PDU_NAMES:
                sock.sendall(P.ABORT_UNRECOGNIZED_PDU)
                return
            if t != P.A_ASSOCIATE_RQ:
                sock.sendall(P.ABORT_UNEXPECTED_PDU)
                return
            if n > 65536:
                raise Abort(6)
            body = rx(sock, n)
            called, calling, contexts, peer_max = parse_rq(body)
            called_s = called.decode("ascii", "replace").strip()
            calling_s = calling.decode("ascii", "replace").strip()
            if not a.accept_any_called_ae and called_s != a.ae_title:
                bump("nectar_associations_rejected_total")
                sock.sendall(P.pdu(P.A_ASSOCIATE_RJ, bytes([0, 1, 1, 7])))
                return
            if a.allowed_calling_ae and calling_s not in a.allowed_calling_ae:
                bump("nectar_associations_rejected_total")
                sock.sendall(P.pdu(P.A_ASSOCIATE_RJ, bytes([0, 1, 1, 3])))
                return
            with self.active_lock:
                if len(self.active) >= a.max_associations:
                    bump("nectar_associations_rejected_total")
                    sock.sendall(P.pdu(P.A_ASSOCIATE_RJ, bytes([0, 2, 3, 2])))
                    return
                self.active.add(sock)
                counted = True
            bump("nectar_associations_total")
            results, accepted = [], {}
            for cid, abstract, tss in contexts:
                if abstract != P.VERIFICATION and not (abstract or "").startswith(STORAGE_PREFIXES):
                    results.append((cid, 3, None))
                    continue
                ts = next((x for x in tss if x in TS_SUPPORTED), None)
                if ts is None:
                    results.append((cid, 4, None))
                    continue
                results.append((cid, 0, ts))
                accepted[cid] = (abstract, ts)
            sock.sendall(build_ac(body, results, a.max_pdu_length))
            sock.settimeout(a.idle_timeout)
            self.dimse(sock, accepted, peer_max)
        except Abort as e:
            try:
                sock.sendall(P.pdu(P.A_ABORT, bytes([0, 0, 2, e.reason])))
            except OSError:
                pass
        except (EOFError, OSError) as e:
            log(f"connection ended: {e!r}")
        finally:
            if counted:
                with self.active_lock:
                    self.active.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def dimse(self, sock, accepted, peer_max) -> None:
        a = self.a
        cmd, data, cmd_done, cur_cid = b"", b"", None, None
        while True:
            head = rx(sock, 6)
            t, _, n = struct.unpack(">BBI", head)
            if t not in P.PDU_NAMES:
                sock.sendall(P.ABORT_UNRECOGNIZED_PDU)
                return
            if t == P.A_RELEASE_RQ:
                rx(sock, n)
                sock.sendall(P.pdu(P.A_RELEASE_RP, bytes(4)))
                return
            if t == P.A_ABORT:
                return
            if t != P.P_DATA_TF:
                raise Abort(2)
            if a.max_pdu_length and n > a.max_pdu_length:
                raise Abort(6)
            body = rx(sock, n)
            pos = 0
            while pos < len(body):
                if pos + 6 > len(body):
                    raise Abort(6)
                (ilen,) = struct.unpack_from(">I", body, pos)
                if ilen < 2 or pos + 4 + ilen > len(body):
                    raise Abort(6)
                cid, hdr = body[pos + 4], body[pos + 5]
                frag = body[pos + 6 : pos + 4 + ilen]
                pos += 4 + ilen
                if cid not in accepted:
                    raise Abort(6)
                if hdr & 1:
                    cmd += frag
                    if hdr & 2:
                        cmd_done, cur_cid, cmd = P.parse_command(cmd), cid, b""
                        if struct.unpack("<H", cmd_done[0x0800])[0] == 0x0101:
                            self.respond(sock, cur_cid, accepted, cmd_done, None, peer_max)
                            cmd_done = None
                else:
                    if cmd_done is None:
                        raise Abort(2)
                    data += frag
                    if hdr & 2:
                        self.respond(sock, cur_cid, accepted, cmd_done, data, peer_max)
                        cmd_done, data = None, b""

    def respond(self, sock, cid, accepted, cmd, data, peer_max) -> None:
        field = struct.unpack("<H", cmd[0x0100])[0]
        msg_id = cmd[0x0110]
        abstract, ts = accepted[cid]
        if field == 0x0030:
            rsp = P.command_set([(0x0002, cmd[0x0002]), (0x0100, struct.pack("<H", 0x8030)),
                                 (0x0120, msg_id), (0x0800, struct.pack("<H", 0x0101)),
                                 (0x0900, struct.pack("<H", 0))])
            sock.sendall(P.p_data(P.pdv(cid, rsp, True, True)))
            return
        sop_class = cmd[0x0002].rstrip(b"\x00 ").decode()
        sop_inst = cmd[0x1000].rstrip(b"\x00 ").decode()
        status, comment = 0, None
        if len(data) % 2:
            status, comment = 0xC000, "odd-length data set"
        else:
            try:
                found = find_sop_instance(data, ts)
            except Exception as e:  # noqa: BLE001
                found, comment = None, f"cannot parse data set: {e}"
            if found is None:
                status, comment = 0xA900, comment or "data set has no SOP Instance UID"
            elif found != sop_inst:
                status, comment = 0xA900, f"SOP Instance UID {found} differs from the command's {sop_inst}"
        if status == 0:
            store(Path(self.a.data_dir), sop_class, sop_inst, ts, data)
            bump("nectar_instances_stored_total")
        els = [(0x0002, cmd[0x0002]), (0x0100, struct.pack("<H", 0x8001)), (0x0120, msg_id),
               (0x0800, struct.pack("<H", 0x0101)), (0x0900, struct.pack("<H", status)),
               (0x1000, cmd[0x1000])]
        if comment:
            c = comment.encode()[:64]
            els.append((0x0902, c + b" " if len(c) % 2 else c))
        sock.sendall(P.p_data(P.pdv(cid, P.command_set(els), True, True)))

    def serve(self) -> int:
        a = self.a
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((a.bind, a.dimse_port))
        lsock.listen(64)
        lsock.settimeout(0.2)
        srv = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/health":
                    body, code = b"ok\n", 200
                elif self.path == "/metrics":
                    with LOCK:
                        body = "".join(f"# TYPE {k} counter\n{k} {v}\n" for k, v in METRICS.items()).encode()
                    code = 200
                else:
                    body, code = b"not found\n", 404
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        http = ThreadingHTTPServer((a.bind, a.http_port), H)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        signal.signal(signal.SIGTERM, lambda *_: srv.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: srv.stopping.set())
        log(f"listening: DIMSE {a.bind}:{a.dimse_port} HTTP {a.bind}:{a.http_port}")
        threads = []
        while not self.stopping.is_set():
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            th = threading.Thread(target=self.handle, args=(conn,), daemon=True)
            th.start()
            threads.append(th)
        lsock.close()
        log("shutting down")
        deadline = time.monotonic() + a.shutdown_timeout
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        with self.active_lock:
            left = list(self.active)
        for s in left:
            try:
                s.sendall(P.pdu(P.A_ABORT, bytes([0, 0, 2, 0])))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for th in threads:
            th.join(2)
        http.shutdown()
        return 0


def fsck(a) -> int:
    import pydicom
    inst = Path(a.data_dir) / "instances"
    files = sorted(inst.glob("*.dcm")) if inst.is_dir() else []
    corrupt = 0
    for f in files:
        try:
            pydicom.dcmread(f)
        except Exception:  # noqa: BLE001
            corrupt += 1
    report = {"records": len(files), "instances": len(files) - corrupt, "corrupt": corrupt,
              "missing_from_manifest": 0, "dangling_in_manifest": 0, "torn_tail_bytes": 0,
              "ok": corrupt == 0}
    if a.json:
        print(json.dumps(report))
    else:
        print(report)
    return 0 if report["ok"] else 1


def export(a) -> int:
    inst = Path(a.data_dir) / "instances"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(inst.glob("*.dcm")) if inst.is_dir() else []:
        shutil.copyfile(f, out / f.name)
        n += 1
    print(f"exported {n} instances")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(prog="nectar")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--data-dir", default=env_default("data-dir"))
    s.add_argument("--ae-title", default=env_default("ae-title", "NECTAR"))
    s.add_argument("--dimse-port", type=int, default=int(env_default("dimse-port", 11112)))
    s.add_argument("--http-port", type=int, default=int(env_default("http-port", 8080)))
    s.add_argument("--bind", default=env_default("bind", "127.0.0.1"))
    s.add_argument("--accept-any-called-ae", action="store_true")
    s.add_argument("--allowed-calling-ae", action="append", default=[])
    s.add_argument("--max-associations", type=int, default=int(env_default("max-associations", 64)))
    s.add_argument("--max-pdu-length", type=int, default=int(env_default("max-pdu-length", 262144)))
    s.add_argument("--artim-timeout", type=float, default=float(env_default("artim-timeout", 30)))
    s.add_argument("--idle-timeout", type=float, default=float(env_default("idle-timeout", 300)))
    s.add_argument("--shutdown-timeout", type=float, default=float(env_default("shutdown-timeout", 10)))
    s.add_argument("--segment-size-mib", type=int, default=64)
    s.add_argument("--workers", type=int, default=2)
    f = sub.add_parser("fsck")
    f.add_argument("--data-dir", required=True)
    f.add_argument("--json", action="store_true")
    e = sub.add_parser("export")
    e.add_argument("--data-dir", required=True)
    e.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "serve" and not a.allowed_calling_ae and env_default("allowed-calling-ae"):
        a.allowed_calling_ae = env_default("allowed-calling-ae").split(",")
    if a.cmd == "serve":
        return Server(a).serve()
    return fsck(a) if a.cmd == "fsck" else export(a)


if __name__ == "__main__":
    sys.exit(main())
