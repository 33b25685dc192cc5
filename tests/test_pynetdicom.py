"""C-STORE from pynetdicom and from hand-built PDUs: PDU sizes, byte orders,
deflate, concurrency, long associations, PDV layouts, UID and AE padding."""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.uid import generate_uid

import corpus
from dicomdata import (ROOT_UID, Instance, associate, contexts_for, instance_of, make_instances, read,
                       send_all, stop_and_verify)
from pdu import (A_ASSOCIATE_AC, A_ASSOCIATE_RJ, CT_IMAGE_STORAGE, EXPLICIT_LE, IMPLICIT_LE,
                 VERIFICATION, Raw, associate_rq, c_store_rq, fragment, p_data, parse_associate_ac,
                 parse_reject, pdv)
from peers import echoscu


@pytest.mark.parametrize("max_pdu", [0, 4096, 1048576])
def test_max_pdu(nectar, tmp_path, max_pdu):
    """Our maximum PDU (0 = unlimited) bounds what nectar sends us; the data set is
    split by nectar's own maximum."""
    big = make_instances(tmp_path / "big", 2, template="pydicom_data/OBXXXX1A.dcm")
    small = make_instances(tmp_path / "small", 3)
    ae, assoc = associate(nectar.dimse_port, contexts_for(big + small), max_pdu=max_pdu)
    try:
        assert assoc.is_established
        assert assoc.requestor.maximum_length == max_pdu
        peer_max = assoc.acceptor.maximum_length
        assert peer_max == 0 or peer_max >= 4096, peer_max
        for inst in big + small:
            rsp = assoc.send_c_store(inst.path)
            assert rsp.Status == 0x0000, inst
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released
    finally:
        ae.shutdown()
    stop_and_verify(nectar, big + small, tmp_path / "export")


def test_big_endian_and_deflated(nectar, tmp_path):
    """Explicit VR Big Endian and Deflated contexts, data sets sent byte for byte.

    image_dfl.dcm's deflate stream is 4303 bytes: odd, without the NUL pad to even
    length that writers (pydicom, dcmtk) add. nectar stores it as received; the
    same instance re-written by pydicom (padded, even) then replaces it."""
    be = instance_of(corpus.path("pydicom/MR_small_bigendian.dcm"))
    dfl_odd = instance_of(corpus.path("pydicom/image_dfl.dcm"))
    assert be.transfer_syntax == corpus.EXPLICIT_BE
    assert dfl_odd.transfer_syntax == corpus.DEFLATED_LE
    assert len(dfl_odd.dataset_bytes()) % 2 == 1
    ds = read(dfl_odd.path)
    dfl_path = tmp_path / "image_dfl_even.dcm"
    ds.save_as(dfl_path, enforce_file_format=True)
    dfl = instance_of(dfl_path)
    assert dfl.transfer_syntax == corpus.DEFLATED_LE and len(dfl.dataset_bytes()) % 2 == 0

    ae, assoc = associate(nectar.dimse_port, contexts_for([be, dfl]))
    try:
        assert assoc.is_established
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        for f in (be, dfl):
            assert (f.sop_class, f.transfer_syntax) in accepted, accepted
        assert assoc.send_c_store(be.path).Status == 0x0000
        odd = assoc.send_c_store(dfl_odd.path)
        assert odd.Status == 0x0000, odd
        assert assoc.is_established
        assert assoc.send_c_store(dfl.path).Status == 0x0000
        assoc.release()
    finally:
        ae.shutdown()
    exported = stop_and_verify(nectar, [be, dfl], tmp_path / "export")
    assert read(exported[dfl.sop_instance]).PatientName == ds.PatientName
    assert read(exported[be.sop_instance]).PixelData == read(be.path).PixelData


def test_concurrent_associations(nectar_factory, tmp_path):
    srv = nectar_factory("--max-associations", "16")
    batches = [make_instances(tmp_path / f"b{n}", 25, template=None if n % 2 else "pydicom/CT_small.dcm")
               for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda b: send_all(srv.dimse_port, b, calling=f"PYSCU{len(b)}"), batches))
    for batch, statuses in zip(batches, results):
        assert len(statuses) == len(batch)
        assert set(statuses.values()) == {0x0000}, statuses
    metrics = srv.metrics()
    assert metrics.get("nectar_instances_stored_total", 0) >= 200, metrics
    assert metrics.get("nectar_associations_total", 0) >= 8, metrics
    stop_and_verify(srv, [i for b in batches for i in b], tmp_path / "export", count=200)


def test_many_stores_one_association(nectar, tmp_path):
    instances = make_instances(tmp_path / "tiny", 1000, template=None)
    statuses = send_all(nectar.dimse_port, instances)
    assert len(statuses) == 1000
    assert all(s == 0x0000 for s in statuses.values())
    assert nectar.metrics().get("nectar_instances_stored_total", 0) >= 1000
    stop_and_verify(nectar, instances, tmp_path / "export")


def test_tiny_pdvs(nectar_factory, tmp_path):
    """nectar limited to 4096-byte PDUs gets a 485 kB data set from pynetdicom in
    ~120 PDVs, and a 38 kB one by hand in 64-byte PDVs, 16 to a P-DATA-TF."""
    srv = nectar_factory("--max-pdu-length", "4096")
    big = make_instances(tmp_path / "big", 1, template="pydicom_data/OBXXXX1A.dcm")
    ae, assoc = associate(srv.dimse_port, contexts_for(big), max_pdu=4096)
    try:
        assert assoc.is_established
        assert assoc.acceptor.maximum_length == 4096
        assert assoc.send_c_store(big[0].path).Status == 0x0000
        assoc.release()
    finally:
        ae.shutdown()

    ct = make_instances(tmp_path / "ct", 1)[0]
    data = ct.dataset_bytes()
    with Raw(srv.dimse_port) as c:
        neg = c.associate(contexts=[(1, CT_IMAGE_STORAGE, [EXPLICIT_LE])], max_pdu=4096)
        assert neg.accepted(1) and neg.max_pdu == 4096
        c.send(p_data(pdv(1, c_store_rq(CT_IMAGE_STORAGE, ct.sop_instance, 3), True, True)))
        pdvs = fragment(1, data, command=False, size=64)
        assert len(pdvs) > 500
        for i in range(0, len(pdvs), 16):
            c.send(p_data(*pdvs[i : i + 16]))
        rsp = c.recv_command()
        assert rsp.status == 0x0000, rsp.command
        assert rsp.message_id_responded == 3
        assert rsp.affected_sop_instance == ct.sop_instance
        c.release()
    stop_and_verify(srv, big + [ct], tmp_path / "export")


def test_command_and_data_in_one_pdu(nectar, tmp_path):
    a, b = make_instances(tmp_path / "ct", 2)
    with Raw(nectar.dimse_port) as c:
        neg = c.associate(contexts=[(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE_STORAGE, [EXPLICIT_LE])])
        assert neg.accepted(1) and neg.accepted(3)
        # command PDV + first data PDV in one P-DATA-TF, the rest later
        data = a.dataset_bytes()
        first, rest = data[:1000], data[1000:]
        c.send(p_data(pdv(3, c_store_rq(CT_IMAGE_STORAGE, a.sop_instance, 1), True, True),
                      pdv(3, first, False, False)))
        c.send(p_data(*fragment(3, rest, command=False, size=8000)))
        rsp = c.recv_command()
        assert rsp.status == 0x0000, rsp.command
        assert rsp.command_field == 0x8001
        # command PDV + the whole data set in one P-DATA-TF
        c.send(p_data(pdv(3, c_store_rq(CT_IMAGE_STORAGE, b.sop_instance, 2), True, True),
                      pdv(3, b.dataset_bytes(), False, True)))
        rsp = c.recv_command()
        assert rsp.status == 0x0000, rsp.command
        assert rsp.message_id_responded == 2
        assert c.c_echo(context_id=1, message_id=3).status == 0x0000
        c.release()
    stop_and_verify(nectar, [a, b], tmp_path / "export")


def _odd_uid() -> str:
    while True:
        u = generate_uid(ROOT_UID)
        if len(u) % 2:
            return u


def test_nul_padded_uids(nectar, tmp_path):
    """Odd-length UIDs travel NUL-padded in the command and the data set; nectar
    must store and name the instance by the UID without the padding."""
    uid = _odd_uid()
    inst = make_instances(tmp_path / "ct", 1, tweak=lambda ds, i: setattr(ds, "SOPInstanceUID", uid))[0]
    assert inst.sop_instance == uid
    data = inst.dataset_bytes()
    assert uid.encode() + b"\x00" in data  # pydicom pads UI with NUL
    assert len(CT_IMAGE_STORAGE) % 2 == 1  # the SOP Class UID is NUL-padded too
    with Raw(nectar.dimse_port) as c:
        c.associate(contexts=[(1, CT_IMAGE_STORAGE, [EXPLICIT_LE])])
        cmd = c_store_rq(CT_IMAGE_STORAGE, uid, 1)
        assert uid.encode() + b"\x00" in cmd
        c.send(p_data(pdv(1, cmd, True, True)))
        c.send(p_data(*fragment(1, data, command=False, size=16000)))
        rsp = c.recv_command()
        assert rsp.status == 0x0000, rsp.command
        assert rsp.affected_sop_instance == uid
        c.release()
    files = stop_and_verify(nectar, [inst], tmp_path / "export")
    assert list(files) == [uid]
    assert "\x00" not in files[uid].name


def test_calling_ae_spaces(nectar, tmp_path):
    """A calling AE of sixteen spaces: with no allow-list nectar either accepts it or
    rejects it cleanly (permanent, service user, calling AE not recognized); it must
    not abort or stop serving."""
    inst = make_instances(tmp_path / "ct", 1)[0]
    with Raw(nectar.dimse_port) as c:
        c.send(associate_rq(calling=b" " * 16, contexts=[(1, VERIFICATION, [IMPLICIT_LE]),
                                                        (3, CT_IMAGE_STORAGE, [EXPLICIT_LE])]))
        t, body = c.recv_pdu()
        assert t in (A_ASSOCIATE_AC, A_ASSOCIATE_RJ), f"PDU type {t}: {body.hex()}"
        if t == A_ASSOCIATE_RJ:
            assert parse_reject(body) == (1, 1, 3)
            stored = []
        else:
            neg = parse_associate_ac(body)
            c.peer_max_pdu = neg.max_pdu
            assert neg.accepted(1) and neg.accepted(3)
            assert c.c_echo(1).status == 0x0000
            assert c.c_store(3, CT_IMAGE_STORAGE, inst.sop_instance, inst.dataset_bytes(), 2).status == 0x0000
            c.release()
            stored = [inst]
    assert echoscu(nectar.dimse_port).ok
    stop_and_verify(nectar, stored, tmp_path / "export")


def test_unsupported_contexts(nectar):
    """Unknown abstract syntax -> result 3; unknown transfer syntax -> result 4;
    the association still carries the good context."""
    with Raw(nectar.dimse_port) as c:
        neg = c.associate(contexts=[(1, "1.2.826.0.1.3680043.9.7433.99.1", [EXPLICIT_LE]),
                                    (3, CT_IMAGE_STORAGE, ["1.2.826.0.1.3680043.9.7433.99.2"]),
                                    (5, VERIFICATION, [IMPLICIT_LE])])
        assert neg.contexts[1][0] == 3, neg
        assert neg.contexts[3][0] == 4, neg
        assert neg.accepted(5), neg
        assert c.c_echo(5).status == 0x0000
        c.release()


def test_message_ids_echoed(nectar, tmp_path):
    """Responses carry the request's Message ID and SOP Instance UID, also for
    large message IDs."""
    instances = make_instances(tmp_path / "tiny", 3, template=None)
    with Raw(nectar.dimse_port) as c:
        c.associate(contexts=[(1, instances[0].sop_class, [EXPLICIT_LE])])
        for inst, mid in zip(instances, (1, 0x7FFF, 0xFFFF)):
            rsp = c.c_store(1, inst.sop_class, inst.sop_instance, inst.dataset_bytes(), message_id=mid)
            assert rsp.status == 0x0000
            assert rsp.message_id_responded == mid
            assert rsp.affected_sop_instance == inst.sop_instance
            assert struct.unpack("<H", rsp.command[0x0800])[0] == 0x0101  # no data set
        c.release()
    stop_and_verify(nectar, instances, tmp_path / "export")


def test_instance_roundtrip_pydicom(nectar, tmp_path):
    """What pydicom reads back from the export equals what was sent."""
    sent = make_instances(tmp_path / "ct", 1, tweak=lambda ds, i: setattr(ds, "PatientName", "ROUND^TRIP"))
    assert send_all(nectar.dimse_port, sent) == {sent[0].sop_instance: 0}
    files = stop_and_verify(nectar, sent, tmp_path / "export")
    a, b = read(sent[0].path), read(files[sent[0].sop_instance])
    assert a == b
    assert b.PatientName == "ROUND^TRIP"
    assert isinstance(sent[0], Instance)
