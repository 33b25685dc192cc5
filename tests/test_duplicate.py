"""Duplicate SOP Instance UIDs: every copy is acknowledged, the newest one wins."""

from pydicom.uid import generate_uid

from dicomdata import ROOT_UID, make_instances, read, send_all, stop_and_verify


def _copies(tmp_path, uid, names, template="pydicom/CT_small.dcm"):
    out = []
    for n, name in enumerate(names):
        def tweak(ds, i, name=name, n=n):
            ds.SOPInstanceUID = uid
            ds.PatientName = name
            ds.StudyDescription = "copy " + "x" * (n * 7)  # a different length each time
        out += make_instances(tmp_path / f"copy{n}", 1, template=template, tweak=tweak)
    return out


def test_duplicate_newest_wins(nectar_factory, tmp_path):
    srv = nectar_factory()
    uid_a, uid_b = generate_uid(ROOT_UID), generate_uid(ROOT_UID)
    a1, a2 = _copies(tmp_path / "a", uid_a, ["FIRST^COPY", "SECOND^COPY"])
    b1, b2, b3 = _copies(tmp_path / "b", uid_b, ["ONE", "TWO", "THREE"], template=None)
    assert a1.dataset_bytes() != a2.dataset_bytes()
    # a: two associations; b: three copies in one association
    assert send_all(srv.dimse_port, [a1]) == {uid_a: 0}
    assert send_all(srv.dimse_port, [a2]) == {uid_a: 0}
    statuses = {}
    send_all(srv.dimse_port, [b1, b2, b3], statuses=statuses)
    assert statuses == {uid_b: 0}
    assert srv.metrics().get("nectar_instances_stored_total", 0) >= 5

    files = stop_and_verify(srv, [a1, a2, b1, b2, b3], tmp_path / "export1")
    assert str(read(files[uid_a]).PatientName) == "SECOND^COPY"
    assert str(read(files[uid_b]).PatientName) == "THREE"

    # the newest copy still wins after a restart rebuilds whatever index there is
    again = nectar_factory(data_dir=srv.data_dir)
    files = stop_and_verify(again, [a2, b3], tmp_path / "export2")
    assert str(read(files[uid_a]).PatientName) == "SECOND^COPY"

    # and a copy sent after the restart replaces it
    third = nectar_factory(data_dir=srv.data_dir)
    (a3,) = _copies(tmp_path / "a3", uid_a, ["THIRD^COPY"])
    assert send_all(third.dimse_port, [a3]) == {uid_a: 0}
    files = stop_and_verify(third, [a3, b3], tmp_path / "export3")
    assert str(read(files[uid_a]).PatientName) == "THIRD^COPY"
