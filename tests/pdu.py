"""Raw DICOM Upper Layer (PS3.8) PDUs and DIMSE command sets, built byte by byte.

Used by the tests that must put exact bytes on the wire (malformed PDUs, PDV
layouts that no toolkit produces) and read exact bytes back (A-ABORT and
A-ASSOCIATE-RJ fields). Nothing here depends on the server under test.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.7433.1.1"

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}

# Exact A-ABORT PDUs (PS3.8 9.3.8): source 2 = service provider.
ABORT_UNRECOGNIZED_PDU = bytes.fromhex("07000000000400000201")
ABORT_UNEXPECTED_PDU = bytes.fromhex("07000000000400000202")


def ae(title: str | bytes) -> bytes:
    """A 16-byte AE title field, space padded."""
    raw = title.encode("ascii") if isinstance(title, str) else title
    assert len(raw) <= 16
    return raw.ljust(16, b" ")


def uid(value: str, pad: bytes = b"\x00") -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def associate_rq(
    called: str | bytes = "NECTAR",
    calling: str | bytes = "RAWSCU",
    contexts: list[tuple[int, str, list[str]]] | None = None,
    max_pdu: int = 16384,
) -> bytes:
    """A-ASSOCIATE-RQ. contexts: (context id (odd), abstract syntax, [transfer syntaxes])."""
    if contexts is None:
        contexts = [(1, VERIFICATION, [IMPLICIT_LE])]
    body = struct.pack(">HH", 1, 0) + ae(called) + ae(calling) + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for cid, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode())
        for ts in syntaxes:
            sub += _item(0x40, ts.encode())
        body += _item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", max_pdu))
    user += _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
    user += _item(0x55, b"NECTAR_TESTS")
    body += _item(0x50, user)
    return pdu(A_ASSOCIATE_RQ, body)


def release_rq() -> bytes:
    return pdu(A_RELEASE_RQ, bytes(4))


def abort_rq(source: int = 0, reason: int = 0) -> bytes:
    return pdu(A_ABORT, struct.pack(">BBBB", 0, 0, source, reason))


def pdv(context_id: int, data: bytes, command: bool, last: bool) -> bytes:
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">IBB", len(data) + 2, context_id, header) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs))


def fragment(context_id: int, data: bytes, command: bool, size: int) -> list[bytes]:
    """data split into PDVs of at most `size` bytes, the last one flagged last."""
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [pdv(context_id, c, command, i == len(chunks) - 1) for i, c in enumerate(chunks)]


# ------------------------------------------------------------------ DIMSE commands


def _element(group: int, elem: int, value: bytes) -> bytes:
    if len(value) % 2:
        raise ValueError("command elements must be even length")
    return struct.pack("<HHI", group, elem, len(value)) + value


def command_set(elements: list[tuple[int, bytes]]) -> bytes:
    """Implicit VR LE group 0000 with its (0000,0000) group length first."""
    body = b"".join(_element(0x0000, e, v) for e, v in sorted(elements))
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set([
        (0x0002, uid(VERIFICATION)),
        (0x0100, struct.pack("<H", 0x0030)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0800, struct.pack("<H", 0x0101)),
    ])


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1, uid_pad: bytes = b"\x00") -> bytes:
    return command_set([
        (0x0002, uid(sop_class, uid_pad)),
        (0x0100, struct.pack("<H", 0x0001)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0700, struct.pack("<H", 0x0000)),
        (0x0800, struct.pack("<H", 0x0000)),
        (0x1000, uid(sop_instance, uid_pad)),
    ])


def parse_command(raw: bytes) -> dict[int, bytes]:
    """Implicit VR LE command set -> {element number: raw value}."""
    out, pos = {}, 0
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        if group != 0x0000:
            raise ValueError(f"non-command element ({group:04x},{elem:04x}) in command set")
        out[elem] = raw[pos + 8 : pos + 8 + length]
        pos += 8 + length
    if pos != len(raw):
        raise ValueError("trailing bytes in command set")
    return out


@dataclass
class Response:
    command: dict[int, bytes]

    def us(self, elem: int) -> int | None:
        v = self.command.get(elem)
        return struct.unpack("<H", v)[0] if v is not None else None

    def text(self, elem: int) -> str | None:
        v = self.command.get(elem)
        return v.rstrip(b"\x00 ").decode("ascii", "replace") if v is not None else None

    @property
    def status(self) -> int | None:
        return self.us(0x0900)

    @property
    def command_field(self) -> int | None:
        return self.us(0x0100)

    @property
    def error_comment(self) -> str | None:
        return self.text(0x0902)

    @property
    def message_id_responded(self) -> int | None:
        return self.us(0x0120)

    @property
    def affected_sop_instance(self) -> str | None:
        return self.text(0x1000)


# ------------------------------------------------------------------- connection


@dataclass
class Negotiated:
    max_pdu: int
    # context id -> (result, transfer syntax or None)
    contexts: dict[int, tuple[int, str | None]] = field(default_factory=dict)

    def accepted(self, cid: int) -> bool:
        return self.contexts.get(cid, (None,))[0] == 0


def parse_associate_ac(body: bytes) -> Negotiated:
    neg = Negotiated(max_pdu=0)
    pos = 68  # version(2) reserved(2) called(16) calling(16) reserved(32)
    while pos + 4 <= len(body):
        itype, _, ilen = struct.unpack_from(">BBH", body, pos)
        item = body[pos + 4 : pos + 4 + ilen]
        if itype == 0x21:
            cid, result = item[0], item[2]
            ts = None
            if len(item) > 4:
                _, _, slen = struct.unpack_from(">BBH", item, 4)
                ts = item[8 : 8 + slen].rstrip(b"\x00 ").decode() or None
            neg.contexts[cid] = (result, ts)
        elif itype == 0x50:
            sp = 0
            while sp + 4 <= len(item):
                stype, _, slen = struct.unpack_from(">BBH", item, sp)
                if stype == 0x51:
                    (neg.max_pdu,) = struct.unpack_from(">I", item, sp + 4)
                sp += 4 + slen
        pos += 4 + ilen
    return neg


class PeerClosed(Exception):
    pass


class Raw:
    """A TCP connection to the server speaking PDUs by hand."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.peer_max_pdu = 0

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise PeerClosed(f"peer closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def recv_pdu(self) -> tuple[int, bytes]:
        """Next PDU as (type, body). Raises PeerClosed on EOF or reset."""
        try:
            header = self._recv_exact(6)
            pdu_type, _, length = struct.unpack(">BBI", header)
            return pdu_type, self._recv_exact(length)
        except ConnectionResetError as e:
            raise PeerClosed(f"connection reset: {e}") from e

    def recv_raw_pdu(self) -> bytes:
        t, body = self.recv_pdu()
        return struct.pack(">BBI", t, 0, len(body)) + body

    def wait_closed(self, timeout: float) -> bytes:
        """Read until EOF/reset within timeout; returns whatever bytes arrived.
        Raises TimeoutError if the peer keeps the connection open."""
        deadline = time.monotonic() + timeout
        got = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer kept the connection open for {timeout}s (got {got.hex()})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return got
            except socket.timeout:
                continue
            if not chunk:
                return got
            got += chunk

    def associate(self, **kw) -> Negotiated:
        """Send A-ASSOCIATE-RQ and expect A-ASSOCIATE-AC."""
        self.send(associate_rq(**kw))
        t, body = self.recv_pdu()
        if t != A_ASSOCIATE_AC:
            raise AssertionError(f"expected A-ASSOCIATE-AC, got {PDU_NAMES.get(t, t)}: {body.hex()}")
        neg = parse_associate_ac(body)
        self.peer_max_pdu = neg.max_pdu
        return neg

    def recv_command(self) -> Response:
        """Collect command PDVs until the last fragment; data PDVs are not expected."""
        buf = b""
        while True:
            t, body = self.recv_pdu()
            if t != P_DATA_TF:
                raise AssertionError(f"expected P-DATA-TF, got {PDU_NAMES.get(t, t)}: {body[:64].hex()}")
            pos = 0
            while pos < len(body):
                (ilen,) = struct.unpack_from(">I", body, pos)
                hdr = body[pos + 5]
                if not hdr & 0x01:
                    raise AssertionError("unexpected data PDV in a response")
                buf += body[pos + 6 : pos + 4 + ilen]
                pos += 4 + ilen
                if hdr & 0x02:
                    return Response(parse_command(buf))

    def c_echo(self, context_id: int = 1, message_id: int = 1) -> Response:
        self.send(p_data(pdv(context_id, c_echo_rq(message_id), command=True, last=True)))
        return self.recv_command()

    def c_store(self, context_id: int, sop_class: str, sop_instance: str, dataset: bytes,
                message_id: int = 1, pdv_size: int | None = None) -> Response:
        """C-STORE with the data set split into PDVs of pdv_size (default: fit the
        peer's max PDU), one PDV per P-DATA-TF."""
        limit = (self.peer_max_pdu or 1 << 20) - 12
        size = min(pdv_size or limit, limit)
        self.send(p_data(pdv(context_id, c_store_rq(sop_class, sop_instance, message_id), True, True)))
        for item in fragment(context_id, dataset, command=False, size=size):
            self.send(p_data(item))
        return self.recv_command()

    def release(self) -> None:
        self.send(release_rq())
        t, body = self.recv_pdu()
        if t != A_RELEASE_RP:
            raise AssertionError(f"expected A-RELEASE-RP, got {PDU_NAMES.get(t, t)}: {body.hex()}")


def parse_reject(body: bytes) -> tuple[int, int, int]:
    """A-ASSOCIATE-RJ body -> (result, source, reason)."""
    assert len(body) == 4, body.hex()
    return body[1], body[2], body[3]
