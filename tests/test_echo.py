"""C-ECHO with dcmtk's echoscu and by hand; called/calling AE title checks."""

from dicomdata import make_instances, send_all, stop_and_verify
from pdu import A_ASSOCIATE_RJ, IMPLICIT_LE, VERIFICATION, Raw, associate_rq, parse_reject
from peers import echoscu


def raw_reject(port: int, called: str, calling: str) -> tuple[int, int, int]:
    with Raw(port) as c:
        c.send(associate_rq(called=called, calling=calling))
        t, body = c.recv_pdu()
        assert t == A_ASSOCIATE_RJ, f"expected A-ASSOCIATE-RJ, got PDU type {t}: {body.hex()}"
        c.wait_closed(10)
        return parse_reject(body)


def test_echo(nectar):
    r = echoscu(nectar.dimse_port)
    assert r.ok, r.output
    with Raw(nectar.dimse_port) as c:
        neg = c.associate(contexts=[(1, VERIFICATION, [IMPLICIT_LE])])
        assert neg.accepted(1), neg
        assert neg.contexts[1][1] == IMPLICIT_LE
        assert neg.max_pdu >= 0
        rsp = c.c_echo(message_id=7)
        assert rsp.command_field == 0x8030, rsp.command
        assert rsp.status == 0x0000
        assert rsp.message_id_responded == 7
        c.release()
    metrics = nectar.metrics()
    assert metrics.get("nectar_associations_total", 0) >= 2, metrics


def test_echo_wrong_called_ae(nectar):
    r = echoscu(nectar.dimse_port, called="NOT-NECTAR")
    assert not r.ok
    assert r.rejected, r.output
    assert "Called AE Title Not Recognized" in r.output, r.output
    # permanent (1), service user (1), called AE title not recognized (7)
    assert raw_reject(nectar.dimse_port, "OTHER", "RAWSCU") == (1, 1, 7)
    assert echoscu(nectar.dimse_port).ok
    assert nectar.metrics().get("nectar_associations_rejected_total", 0) >= 2


def test_echo_any_called_ae(nectar_factory):
    srv = nectar_factory("--accept-any-called-ae")
    for called in ("ANY-SCP", "NECTAR", "SOMETHING-ELSE", "X"):
        r = echoscu(srv.dimse_port, called=called)
        assert r.ok, f"called AE {called!r}: {r.output}"
    assert srv.metrics().get("nectar_associations_total", 0) >= 4


def test_calling_ae_allow_list(nectar_factory):
    srv = nectar_factory("--allowed-calling-ae", "MODALITY1", "--allowed-calling-ae", "MODALITY2")
    assert echoscu(srv.dimse_port, calling="MODALITY1").ok
    assert echoscu(srv.dimse_port, calling="MODALITY2").ok
    r = echoscu(srv.dimse_port, calling="INTRUDER")
    assert not r.ok and r.rejected, r.output
    assert "Calling AE Title Not Recognized" in r.output, r.output
    # permanent (1), service user (1), calling AE title not recognized (3)
    assert raw_reject(srv.dimse_port, "NECTAR", "MODALITY3") == (1, 1, 3)
    assert echoscu(srv.dimse_port, calling="MODALITY1").ok


def test_env_config(nectar_factory, tmp_path):
    """Every serve flag is also read from NECTAR_* variables (no flags given here)."""
    srv = nectar_factory(ae_title="ENVNECTAR", use_env_config=True,
                         env={"NECTAR_ALLOWED_CALLING_AE": "PYNETDICOM,ECHOSCU"})
    assert echoscu(srv.dimse_port, called="ENVNECTAR").ok
    assert not echoscu(srv.dimse_port, called="NECTAR").ok
    assert not echoscu(srv.dimse_port, called="ENVNECTAR", calling="STRANGER").ok
    inst = make_instances(tmp_path / "ct", 1)
    assert send_all(srv.dimse_port, inst, called="ENVNECTAR") == {inst[0].sop_instance: 0}
    stop_and_verify(srv, inst, tmp_path / "export")  # stored in NECTAR_DATA_DIR
