"""Malformed input on raw sockets. After each case the server must still answer
echoscu, and nothing invalid may be stored."""

from __future__ import annotations

import socket
import struct

import pytest
from pydicom.uid import generate_uid

from dicomdata import ROOT_UID, encode, make_instances, read, stop_and_verify, tiny_dataset
from pdu import (ABORT_UNEXPECTED_PDU, ABORT_UNRECOGNIZED_PDU, A_ABORT, CT_IMAGE_STORAGE, EXPLICIT_LE,
                 SECONDARY_CAPTURE, Raw, associate_rq, c_echo_rq, c_store_rq, fragment, p_data, pdu, pdv)
from peers import echoscu


def serving(port: int) -> None:
    r = echoscu(port)
    assert r.ok, f"server stopped answering C-ECHO:\n{r.output}"


def expect_abort_then_close(c: Raw, timeout: float = 15) -> bytes:
    """The server's reply to bad input: an A-ABORT from the service provider
    (source 2), then the connection closes."""
    got = c.wait_closed(timeout)
    assert len(got) >= 10, f"expected an A-ABORT, got {got.hex() or 'nothing'} before close"
    assert got[0] == A_ABORT, got.hex()
    assert got[:6] == bytes.fromhex("070000000004"), got.hex()
    assert got[8] == 2, f"A-ABORT source {got[8]}, expected 2 (service provider): {got.hex()}"
    assert len(got) == 10, f"bytes after the A-ABORT: {got.hex()}"
    return got


def test_unknown_pdu_type(nectar):
    for pdu_type in (0x0A, 0x7F, 0xFF):
        with Raw(nectar.dimse_port) as c:
            c.send(pdu(pdu_type, bytes(4)))
            assert c.wait_closed(15) == ABORT_UNRECOGNIZED_PDU
    with Raw(nectar.dimse_port) as c:  # also once associated
        c.associate()
        c.send(pdu(0x0B, bytes(8)))
        assert c.wait_closed(15) == ABORT_UNRECOGNIZED_PDU
    serving(nectar.dimse_port)


def test_pdata_before_associate(nectar):
    with Raw(nectar.dimse_port) as c:
        c.send(p_data(pdv(1, c_echo_rq(), True, True)))
        assert c.wait_closed(15) == ABORT_UNEXPECTED_PDU
    with Raw(nectar.dimse_port) as c:  # A-RELEASE-RQ before association is unexpected too
        c.send(pdu(0x05, bytes(4)))
        got = c.wait_closed(15)
        assert got in (ABORT_UNEXPECTED_PDU, b""), got.hex()
    serving(nectar.dimse_port)


def test_truncated_pdu(nectar):
    rq = associate_rq()
    with Raw(nectar.dimse_port) as c:  # half an A-ASSOCIATE-RQ, then EOF
        c.send(rq[: len(rq) // 2])
        c.sock.shutdown(socket.SHUT_WR)
        got = c.wait_closed(15)
        assert got == b"" or got[0] == A_ABORT, got.hex()
    with Raw(nectar.dimse_port) as c:  # a PDU header cut short
        c.send(rq[:3])
        c.sock.shutdown(socket.SHUT_WR)
        got = c.wait_closed(15)
        assert got == b"" or got[0] == A_ABORT, got.hex()
    with Raw(nectar.dimse_port) as c:  # a P-DATA-TF cut short inside an association
        c.associate()
        whole = p_data(pdv(1, c_echo_rq(), True, True))
        c.send(whole[:-5])
        c.sock.shutdown(socket.SHUT_WR)
        got = c.wait_closed(15)
        assert got == b"" or got[0] == A_ABORT, got.hex()
    serving(nectar.dimse_port)


def _rq_with_bad_item_length() -> bytes:
    rq = bytearray(associate_rq())
    pos = 6 + 68
    while rq[pos] != 0x20:  # first presentation context item
        pos += 4 + struct.unpack_from(">H", rq, pos + 2)[0]
    struct.pack_into(">H", rq, pos + 2, 0xFFF0)  # runs past the end of the PDU
    return bytes(rq)


@pytest.mark.parametrize("case", ["item-overrun", "short-fixed-fields", "pdv-overrun", "pdv-too-short"])
def test_wrong_lengths(nectar, case):
    with Raw(nectar.dimse_port) as c:
        if case == "item-overrun":
            c.send(_rq_with_bad_item_length())
        elif case == "short-fixed-fields":
            c.send(pdu(0x01, associate_rq()[6:16]))  # 10 bytes where 68 are fixed
        else:
            c.associate()
            cmd = c_echo_rq()
            if case == "pdv-overrun":  # PDV item length beyond its PDU
                body = struct.pack(">IBB", len(cmd) + 2 + 100, 1, 0x03) + cmd
            else:  # PDV item length 1: no room for its header
                body = struct.pack(">IBB", 1, 1, 0x03) + cmd
            c.send(pdu(0x04, body))
        expect_abort_then_close(c)
    serving(nectar.dimse_port)


def test_oversized_pdu(nectar_factory):
    srv = nectar_factory("--max-pdu-length", "16384", "--artim-timeout", "5")
    with Raw(srv.dimse_port) as c:
        neg = c.associate(contexts=[(1, CT_IMAGE_STORAGE, [EXPLICIT_LE])])
        assert neg.max_pdu == 16384
        body = pdv(1, bytes(4 * 16384), False, False)
        try:
            c.send(pdu(0x04, body))
        except (BrokenPipeError, ConnectionResetError):
            pass
        expect_abort_then_close(c)
    with Raw(srv.dimse_port) as c:  # an A-ASSOCIATE-RQ claiming 4 GB
        c.send(struct.pack(">BBI", 0x01, 0, 0xFFFFFFF0) + associate_rq()[6:])
        got = c.wait_closed(20)
        assert got == b"" or (got[0] == A_ABORT and got[8] == 2), got.hex()
    serving(srv.dimse_port)


def test_odd_length_dataset(nectar, tmp_path):
    good, bad = make_instances(tmp_path / "ct", 2)
    data = bad.dataset_bytes() + b"\x00"  # odd length: the last PDV is odd
    with Raw(nectar.dimse_port) as c:
        c.associate(contexts=[(1, CT_IMAGE_STORAGE, [EXPLICIT_LE])])
        c.send(p_data(pdv(1, c_store_rq(CT_IMAGE_STORAGE, bad.sop_instance, 1), True, True)))
        pdvs = fragment(1, data, command=False, size=8192)
        assert len(pdvs[-1]) % 2 == 1
        for item in pdvs:
            c.send(p_data(item))
        rsp = c.recv_command()
        assert rsp.command_field == 0x8001
        assert rsp.status == 0xC000, f"status {rsp.status:#06x}"
        assert rsp.error_comment, "failure without Error Comment (0000,0902)"
        assert rsp.message_id_responded == 1
        # the association is still usable
        ok = c.c_store(1, CT_IMAGE_STORAGE, good.sop_instance, good.dataset_bytes(), message_id=2)
        assert ok.status == 0x0000
        c.release()
    serving(nectar.dimse_port)
    stop_and_verify(nectar, [good], tmp_path / "export")


def test_sop_instance_uid_checks(nectar, tmp_path):
    good = make_instances(tmp_path / "ok", 1, template=None)[0]
    no_uid = tiny_dataset()
    del no_uid.SOPInstanceUID
    other = tiny_dataset()
    claimed = generate_uid(ROOT_UID)
    with Raw(nectar.dimse_port) as c:
        c.associate(contexts=[(1, SECONDARY_CAPTURE, [EXPLICIT_LE])])
        # data set without SOP Instance UID
        rsp = c.c_store(1, SECONDARY_CAPTURE, generate_uid(ROOT_UID), encode(no_uid), message_id=1)
        assert rsp.status is not None and rsp.status & 0xFF00 == 0xA900, f"status {rsp.status:#06x}"
        assert rsp.error_comment, "failure without Error Comment (0000,0902)"
        # data set UID differs from the command's Affected SOP Instance UID
        rsp = c.c_store(1, SECONDARY_CAPTURE, claimed, encode(other), message_id=2)
        assert rsp.status is not None and rsp.status & 0xFF00 == 0xA900, f"status {rsp.status:#06x}"
        assert rsp.error_comment
        assert rsp.message_id_responded == 2
        # the association is still usable
        rsp = c.c_store(1, SECONDARY_CAPTURE, good.sop_instance, good.dataset_bytes(), message_id=3)
        assert rsp.status == 0x0000
        c.release()
    serving(nectar.dimse_port)
    files = stop_and_verify(nectar, [good], tmp_path / "export")
    assert claimed not in files and str(other.SOPInstanceUID) not in files
    assert read(files[good.sop_instance]).PatientName == "TINY^TEST"
