"""Association limit and the ARTIM timer."""

import time

from pynetdicom.sop_class import Verification

from dicomdata import associate
from pdu import A_ASSOCIATE_RJ, Raw, associate_rq, parse_reject
from peers import echoscu

VERIFY = [(Verification, ["1.2.840.10008.1.2"])]


def test_association_limit(nectar_factory):
    srv = nectar_factory("--max-associations", "2")
    held = [associate(srv.dimse_port, VERIFY, calling=f"HOLD{n}") for n in range(2)]
    try:
        for _, assoc in held:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000
        # transient (2), service provider presentation (3), local limit exceeded (2)
        with Raw(srv.dimse_port) as c:
            c.send(associate_rq())
            t, body = c.recv_pdu()
            assert t == A_ASSOCIATE_RJ, f"PDU type {t}: {body.hex()}"
            assert parse_reject(body) == (2, 3, 2)
        r = echoscu(srv.dimse_port)
        assert not r.ok and r.rejected, r.output
        assert "Rejected Transient" in r.output, r.output
        assert "Local Limit Exceeded" in r.output, r.output
        assert srv.metrics().get("nectar_associations_rejected_total", 0) >= 2

        held[0][1].release()
        deadline = time.monotonic() + 10
        while not (r := echoscu(srv.dimse_port)).ok and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.ok, f"no association accepted within 10 s of a release: {r.output}"
        assert held[1][1].send_c_echo().Status == 0x0000
    finally:
        for ae, assoc in held:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()
    assert echoscu(srv.dimse_port).ok


def test_artim_timeout(nectar_factory):
    """A connection that never completes an A-ASSOCIATE-RQ is closed after
    --artim-timeout; a silent one and one that stalls mid-PDU alike."""
    srv = nectar_factory("--artim-timeout", "2")
    with Raw(srv.dimse_port, timeout=30) as silent, Raw(srv.dimse_port, timeout=30) as stalled:
        stalled.send(associate_rq()[:20])
        got = silent.wait_closed(20)
        assert got == b"" or got[0] == 0x07, got.hex()
        got = stalled.wait_closed(20)
        assert got == b"" or got[0] == 0x07, got.hex()
    # one that associates in time is served normally
    with Raw(srv.dimse_port) as c:
        time.sleep(0.5)
        c.associate()
        assert c.c_echo().status == 0x0000
        c.release()
    assert echoscu(srv.dimse_port).ok
