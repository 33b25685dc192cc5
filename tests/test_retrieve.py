"""C-GET and C-MOVE from nectar with real peers: dcmtk getscu and movescu,
dcmtk storescp and Orthanc as C-MOVE destinations, and pynetdicom for the
cases the dcmtk tools cannot make (a transfer syntax that does not fit, C-CANCEL).

One nectar serves the whole module. It is loaded with the public corpus through
dcmtk storescu and with two studies made from corpus files with new UIDs. The CT
study of 12 instances goes through storescu. The mixed study of two Explicit VR
and one Implicit VR Little Endian instance is sent byte for byte with pynetdicom.

getscu 3.6.7 writes received data sets again with undefined-length sequences, so
its files are compared with the stored records element by element. The pynetdicom
C-GET records the data set bytes as they arrive and compares them byte for byte.
"""

from __future__ import annotations

import subprocess
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

import corpus
import dicomdata
from compare import diff, read_any
from nectar import Nectar, export
from orthanc import Orthanc
from peers import ALL_INTERFACE_PEERS, RefStoreSCP, dcmtk, dcmtk_env, free_port, loopback_only, run_dcmtk, storescu

SUCCESS, WARNING, CANCEL, PENDING = 0x0000, 0xB000, 0xFE00, 0xFF00
UNABLE_TO_PERFORM, DESTINATION_UNKNOWN, IDENTIFIER_MISMATCH = 0xA702, 0xA801, 0xA900
CT_STUDY_SIZE = 12
PEER_TIMEOUT = 30.0


@dataclass
class Archive:
    nectar: Nectar
    ct_study: list[dicomdata.Instance]
    mixed_study: list[dicomdata.Instance]
    ref_destination: RefStoreSCP
    storescp_port: int
    orthanc: Orthanc
    work_dir: Path
    _stored: dict[str, Path] | None = None

    @property
    def port(self) -> int:
        return self.nectar.dimse_port

    def stored(self) -> dict[str, Path]:
        """SOP Instance UID -> the stored record as exported by `nectar export`.
        nectar is stopped for the export and started again on the same data."""
        if self._stored is None:
            assert self.nectar.stop() == 0, self.nectar.log_tail()
            self._stored = export(self.nectar.data_dir, self.work_dir / "export").files()
            self.nectar.start()
        return self._stored


def _study_uid(instances) -> str:
    return str(dicomdata.read(instances[0].path).StudyInstanceUID)


def _load_corpus(port: int) -> None:
    groups: OrderedDict[str, list] = OrderedDict()
    for f in corpus.dcmtk_sendable():
        groups.setdefault(f.storescu_option, []).append(f)
    for option, files in groups.items():
        run = storescu(port, [f.path for f in files], option)
        assert run.returncode == 0, f"storescu {option} exit {run.returncode}: {run.output[-2000:]}"


def _make_mixed_study(out_dir: Path) -> list[dicomdata.Instance]:
    """Two Explicit VR and one Implicit VR Little Endian CT instances of one study."""
    explicit = dicomdata.make_instances(out_dir / "explicit", 2, transfer_syntax=corpus.EXPLICIT_LE)
    study = _study_uid(explicit)

    def same_study(ds, i):
        ds.StudyInstanceUID = study
        ds.PatientID = "NECTAR-RETRIEVE-MIXED"

    implicit = dicomdata.make_instances(out_dir / "implicit", 1, transfer_syntax=corpus.IMPLICIT_LE,
                                        tweak=same_study)
    return explicit + implicit


@pytest.fixture(scope="module")
def archive(tmp_path_factory, nectar_binary, corpus_files):
    work = tmp_path_factory.mktemp("retrieve")
    sop_classes = [f.sop_class_uid for f in corpus_files if f.sop_class_uid]
    ref = RefStoreSCP(sop_classes, list(corpus.STORESCU_TS_OPTION), ae_title="REFSCP")
    storescp_port = free_port()
    orthanc = Orthanc(work / "orthanc", ae_title="ORTHANC")
    remote_aes = {
        "REFSCP": ref.port,
        "STORESCP": storescp_port,
        "ORTHANC": orthanc.dicom_port,
    }
    args = [x for ae, port in remote_aes.items() for x in ("--remote-ae", f"{ae}=127.0.0.1:{port}")]
    server = Nectar(work / "data", work / "logs", args=args)
    try:
        server.start()
        _load_corpus(server.dimse_port)
        ct_study = dicomdata.make_instances(work / "ct", CT_STUDY_SIZE)
        run = storescu(server.dimse_port, [i.path for i in ct_study], "-xe")
        assert len(run.succeeded()) == CT_STUDY_SIZE, run.output[-2000:]
        mixed = _make_mixed_study(work / "mixed")
        statuses = dicomdata.send_all(server.dimse_port, mixed)
        assert set(statuses.values()) == {SUCCESS}, statuses
        yield Archive(server, ct_study, mixed, ref, storescp_port, orthanc, work)
    finally:
        orthanc.stop()
        ref.close()
        if server.running:
            assert server.stop() == 0, server.log_tail()


# ----------------------------------------------------------------------------- pynetdicom SCU


@dataclass
class Retrieve:
    """Responses of one C-GET or C-MOVE and the data sets a C-GET received."""
    statuses: list[int] = field(default_factory=list)
    final: Dataset | None = None
    final_identifier: Dataset | None = None
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def final_status(self) -> int:
        return int(self.final.Status)

    def count(self, keyword: str) -> int:
        return int(self.final.get(keyword, 0))

    def failed_uids(self) -> list[str]:
        if self.final_identifier is None or "FailedSOPInstanceUIDList" not in self.final_identifier:
            return []
        value = self.final_identifier.FailedSOPInstanceUIDList
        return [str(v) for v in (value if isinstance(value, pydicom.multival.MultiValue) else [value])]


def _identifier(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _collect(responses, result: Retrieve, on_pending=None) -> Retrieve:
    for status, identifier in responses:
        assert status is not None and "Status" in status, "association lost before the final response"
        code = int(status.Status)
        result.statuses.append(code)
        if code in (PENDING, 0xFF01):
            if on_pending:
                on_pending(len(result.statuses))
            continue
        result.final, result.final_identifier = status, identifier
    return result


def _get_ae(storage: list[tuple[str, list[str]]], model) -> tuple[AE, list]:
    ae = dicomdata.scu([(model, [corpus.EXPLICIT_LE, corpus.IMPLICIT_LE]), (Verification, [corpus.IMPLICIT_LE])])
    for sop_class, syntaxes in storage:
        ae.add_requested_context(sop_class, syntaxes)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted({sc for sc, _ in storage})]
    return ae, roles


def c_get(port: int, identifier: Dataset, storage: list[tuple[str, list[str]]],
          model=StudyRootQueryRetrieveInformationModelGet, max_pdu: int = 16382,
          on_store=None) -> Retrieve:
    """One C-GET on a new association that proposes `storage` with the SCP role;
    records each received data set's bytes as they arrived."""
    result = Retrieve()
    ae, roles = _get_ae(storage, model)
    holder = {}

    def handle_store(event):
        request = event.request
        result.received[str(request.AffectedSOPInstanceUID)] = (
            str(event.context.transfer_syntax), request.DataSet.getvalue())
        if on_store:
            on_store(holder["assoc"], len(result.received))
        return SUCCESS

    assoc = ae.associate("127.0.0.1", port, ae_title="NECTAR", ext_neg=roles, max_pdu=max_pdu,
                         evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    holder["assoc"] = assoc
    try:
        assert assoc.is_established, "C-GET association not established"
        _collect(assoc.send_c_get(identifier, model), result)
        assoc.release()
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()
    return result


def _storage_contexts(instances) -> list[tuple[str, list[str]]]:
    return sorted({(i.sop_class, (i.transfer_syntax,)) for i in instances})


# ----------------------------------------------------------------------------- C-GET


def test_getscu_whole_study(archive, tmp_path):
    study = _study_uid(archive.ct_study)
    out = tmp_path / "getscu"
    out.mkdir()
    run = run_dcmtk(["getscu", "-v", "-S", "-aec", "NECTAR", "-ta", "30", "-td", "60",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     "-od", str(out), "127.0.0.1", str(archive.port)])
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Received C-GET Response (Success)" in output, output[-3000:]
    assert f"Number of Completed Suboperations : {CT_STUDY_SIZE}" in output, output[-3000:]

    received = {str(read_any(p).SOPInstanceUID): p for p in out.iterdir()}
    assert set(received) == {i.sop_instance for i in archive.ct_study}
    stored = archive.stored()
    for uid, path in received.items():
        differences = diff(read_any(stored[uid]), read_any(path))
        assert not differences, f"{uid}: getscu's copy differs from the stored record: {differences[:5]}"


def test_get_every_corpus_study_byte_exact(archive):
    """Every stored study, retrieved with the contexts its instances need and no
    PDU limit: the data set bytes that arrive are the stored record's."""
    stored = archive.stored()
    studies: dict[str, list[dicomdata.Instance]] = {}
    for uid, path in stored.items():
        ds = dicomdata.read(path)
        instance = dicomdata.Instance(path, str(ds.file_meta.MediaStorageSOPClassUID), uid,
                                      str(ds.file_meta.TransferSyntaxUID))
        studies.setdefault(str(ds.StudyInstanceUID), []).append(instance)
    assert len(studies) >= 30, f"only {len(studies)} studies stored"

    for study, instances in studies.items():
        result = c_get(archive.port, _identifier("STUDY", StudyInstanceUID=study),
                       [(sc, list(ts)) for sc, ts in _storage_contexts(instances)], max_pdu=0)
        assert result.final_status == SUCCESS, (study, hex(result.final_status), result.failed_uids())
        assert result.count("NumberOfCompletedSuboperations") == len(instances)
        assert set(result.received) == {i.sop_instance for i in instances}, study
        for instance in instances:
            transfer_syntax, data = result.received[instance.sop_instance]
            assert transfer_syntax == instance.transfer_syntax, instance.sop_instance
            assert data == dicomdata.dataset_bytes(instance.path), \
                f"{instance.sop_instance}: received data set differs from the stored record"


def test_get_unaccepted_syntax_fails_instance(archive):
    explicit = [i for i in archive.mixed_study if i.transfer_syntax == corpus.EXPLICIT_LE]
    implicit = [i for i in archive.mixed_study if i.transfer_syntax == corpus.IMPLICIT_LE]
    sop_class = archive.mixed_study[0].sop_class
    result = c_get(archive.port, _identifier("STUDY", StudyInstanceUID=_study_uid(archive.mixed_study)),
                   [(sop_class, [corpus.EXPLICIT_LE])])

    assert result.final_status in (WARNING, UNABLE_TO_PERFORM), hex(result.final_status)
    assert result.final_status != SUCCESS
    assert result.count("NumberOfFailedSuboperations") == 1
    assert result.count("NumberOfCompletedSuboperations") == 2
    assert result.failed_uids() == [implicit[0].sop_instance]
    assert set(result.received) == {i.sop_instance for i in explicit}
    assert result.statuses.count(PENDING) == 3, "one Pending response per sub-operation"


def test_get_small_pdu_byte_exact(archive):
    """A 4096-byte maximum PDU splits each CT data set into many PDVs."""
    ct = archive.ct_study
    result = c_get(archive.port, _identifier("STUDY", StudyInstanceUID=_study_uid(ct)),
                   [(ct[0].sop_class, [corpus.EXPLICIT_LE])], max_pdu=4096)
    assert result.final_status == SUCCESS, hex(result.final_status)
    stored = archive.stored()
    for instance in ct:
        _, data = result.received[instance.sop_instance]
        assert data == dicomdata.dataset_bytes(stored[instance.sop_instance]), instance.sop_instance


def test_get_patient_level_patient_root(archive):
    result = c_get(archive.port, _identifier("PATIENT", PatientID="NECTAR-RETRIEVE-MIXED"),
                   [(archive.mixed_study[0].sop_class, [corpus.EXPLICIT_LE]),
                    (archive.mixed_study[0].sop_class, [corpus.IMPLICIT_LE])],
                   model=PatientRootQueryRetrieveInformationModelGet)
    assert result.final_status == SUCCESS, hex(result.final_status)
    assert result.count("NumberOfCompletedSuboperations") == 3


def test_get_series_and_image_levels(archive):
    ct = archive.ct_study
    storage = [(ct[0].sop_class, [corpus.EXPLICIT_LE])]
    series = str(dicomdata.read(ct[0].path).SeriesInstanceUID)
    by_series = c_get(archive.port, _identifier("SERIES", SeriesInstanceUID=series), storage)
    assert by_series.final_status == SUCCESS
    assert set(by_series.received) == {i.sop_instance for i in ct}

    requested = [ct[3].sop_instance, ct[7].sop_instance]
    by_image = c_get(archive.port, _identifier("IMAGE", SOPInstanceUID="\\".join(requested)), storage)
    assert by_image.final_status == SUCCESS
    assert sorted(by_image.received) == sorted(requested)


@pytest.mark.parametrize("identifier", [
    _identifier("STUDY"),
    _identifier("FRAME", StudyInstanceUID="1.2.3"),
    _identifier("PATIENT", PatientID="X"),
    _identifier("IMAGE", SOPInstanceUID="1.2.*"),
], ids=["missing-key", "unknown-level", "patient-on-study-root", "wildcard"])
def test_get_invalid_identifier_rejected(archive, identifier):
    result = c_get(archive.port, identifier, [(archive.ct_study[0].sop_class, [corpus.EXPLICIT_LE])])
    assert result.final_status == IDENTIFIER_MISMATCH, hex(result.final_status)
    assert "ErrorComment" in result.final
    assert not result.received


def test_get_unknown_study_succeeds_empty(archive):
    result = c_get(archive.port, _identifier("STUDY", StudyInstanceUID="1.2.3.4.5.6.7.8.9"),
                   [(archive.ct_study[0].sop_class, [corpus.EXPLICIT_LE])])
    assert result.final_status == SUCCESS
    assert result.count("NumberOfCompletedSuboperations") == 0


def test_get_cancel_ends_with_cancel(archive):
    """The C-CANCEL-RQ goes out from the first C-STORE handler, before that
    sub-operation's C-STORE-RSP, so nectar reads it during the first sub-operation."""
    def cancel_once(assoc, stored_count):
        if stored_count == 1:
            assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelGet)

    result = c_get(archive.port, _identifier("STUDY", StudyInstanceUID=_study_uid(archive.ct_study)),
                   [(archive.ct_study[0].sop_class, [corpus.EXPLICIT_LE])], on_store=cancel_once)
    assert result.final_status == CANCEL, hex(result.final_status)
    assert len(result.received) < CT_STUDY_SIZE
    assert result.count("NumberOfCompletedSuboperations") == len(result.received)
    assert result.count("NumberOfRemainingSuboperations") == CT_STUDY_SIZE - len(result.received)


# ----------------------------------------------------------------------------- C-MOVE


def _movescu(port: int, destination: str, study: str) -> str:
    run = run_dcmtk(["movescu", "-v", "-S", "-aec", "NECTAR", "-aem", destination, "-ta", "30", "-td", "120",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     "127.0.0.1", str(port)])
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    return output


def test_movescu_to_storescp(archive, tmp_path):
    if not loopback_only():
        pytest.skip(ALL_INTERFACE_PEERS)
    out = tmp_path / "storescp"
    out.mkdir()
    log = open(tmp_path / "storescp.log", "wb")
    storescp = subprocess.Popen([dcmtk("storescp"), "-v", "-aet", "STORESCP", "+xa", "-od", str(out),
                                 "-ta", "30", "-td", "60", str(archive.storescp_port)],
                                env=dcmtk_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PEER_TIMEOUT
        while run_dcmtk(["echoscu", "-aec", "STORESCP", "127.0.0.1", str(archive.storescp_port)],
                        timeout=15).returncode != 0:
            assert time.monotonic() < deadline, "storescp did not answer C-ECHO"
            time.sleep(0.2)
        output = _movescu(archive.port, "STORESCP", _study_uid(archive.ct_study))
        assert "Received Final Move Response (Success)" in output, output[-3000:]
    finally:
        storescp.terminate()
        storescp.wait(timeout=PEER_TIMEOUT)
        log.close()
    received = {str(read_any(p).SOPInstanceUID) for p in out.iterdir()}
    assert received == {i.sop_instance for i in archive.ct_study}


def test_movescu_to_orthanc(archive):
    if not loopback_only():
        pytest.skip(ALL_INTERFACE_PEERS)
    with archive.orthanc:
        output = _movescu(archive.port, "ORTHANC", _study_uid(archive.ct_study))
        assert "Received Final Move Response (Success)" in output, output[-3000:]
        assert archive.orthanc.sop_instance_uids() == {i.sop_instance for i in archive.ct_study}


def _move_assoc(port: int) -> tuple[AE, object]:
    ae = dicomdata.scu([(StudyRootQueryRetrieveInformationModelMove, [corpus.EXPLICIT_LE]),
                        (Verification, [corpus.IMPLICIT_LE])], calling="MOVESCU")
    assoc = ae.associate("127.0.0.1", port, ae_title="NECTAR")
    assert assoc.is_established, "C-MOVE association not established"
    return ae, assoc


def _received_since(ref: RefStoreSCP, start: int) -> set[str]:
    return {r.sop_instance for r in ref.received[start:]}


def test_move_unknown_destination_keeps_association(archive):
    study = _identifier("STUDY", StudyInstanceUID=_study_uid(archive.ct_study))
    model = StudyRootQueryRetrieveInformationModelMove
    ae, assoc = _move_assoc(archive.port)
    try:
        unknown = _collect(assoc.send_c_move(study, "NOWHERE", model), Retrieve())
        assert unknown.final_status == DESTINATION_UNKNOWN, hex(unknown.final_status)

        echo = assoc.send_c_echo()
        assert int(echo.Status) == SUCCESS

        before = len(archive.ref_destination.received)
        moved = _collect(assoc.send_c_move(study, "REFSCP", model), Retrieve())
        assert moved.final_status == SUCCESS, hex(moved.final_status)
        assert moved.count("NumberOfCompletedSuboperations") == CT_STUDY_SIZE
        assert _received_since(archive.ref_destination, before) == {i.sop_instance for i in archive.ct_study}
        assoc.release()
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()


def test_move_cancel_ends_with_cancel(archive):
    """A destination whose first C-STORE handler sends C-CANCEL-RQ on the
    originator's association and then delays its C-STORE-RSP by 0.5 s,
    so nectar reads the cancel while that sub-operation is still open."""
    destination_port = free_port()
    holder = {}

    def handle_store(event):
        holder["stores"] = holder.get("stores", 0) + 1
        holder.setdefault("originators", []).append((
            event.assoc.requestor.ae_title,
            str(event.request.MoveOriginatorApplicationEntityTitle).strip(),
            int(event.request.MoveOriginatorMessageID),
        ))
        if holder["stores"] == 1:
            holder["assoc"].send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelMove)
            time.sleep(0.5)
        return SUCCESS

    destination = AE(ae_title="CANCELSCP")
    destination.add_supported_context(archive.ct_study[0].sop_class, [corpus.EXPLICIT_LE])
    server = destination.start_server(("127.0.0.1", destination_port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    try:
        # nectar's table has no entry for this port, so a second nectar with one serves this test.
        data = archive.work_dir / "cancel"
        second = Nectar(data / "data", data / "logs", args=["--remote-ae", f"CANCELSCP=127.0.0.1:{destination_port}"])
        second.start()
        try:
            statuses = dicomdata.send_all(second.dimse_port, archive.ct_study)
            assert set(statuses.values()) == {SUCCESS}
            ae, assoc = _move_assoc(second.dimse_port)
            holder["assoc"] = assoc
            try:
                study = _identifier("STUDY", StudyInstanceUID=_study_uid(archive.ct_study))
                result = _collect(assoc.send_c_move(study, "CANCELSCP", StudyRootQueryRetrieveInformationModelMove),
                                  Retrieve())
                assoc.release()
            finally:
                if assoc.is_established:
                    assoc.abort()
                ae.shutdown()
            metrics = second.metrics()
        finally:
            assert second.stop() == 0, second.log_tail()
    finally:
        server.shutdown()
    assert result.final_status == CANCEL, hex(result.final_status)
    assert holder["stores"] < CT_STUDY_SIZE
    assert result.count("NumberOfRemainingSuboperations") == CT_STUDY_SIZE - holder["stores"]
    assert set(holder["originators"]) == {("NECTAR", "MOVESCU", 1)}, "calling AE, Move Originator AE and message ID"
    assert metrics.get("nectar_retrieves_total") == 1
    assert metrics.get("nectar_retrieve_bytes_total", 0) > 0


def test_move_unreachable_destination_fails(archive, nectar_factory):
    closed_port = free_port()  # nothing listens here
    server = nectar_factory("--remote-ae", f"GONE=127.0.0.1:{closed_port}")
    statuses = dicomdata.send_all(server.dimse_port, archive.mixed_study)
    assert set(statuses.values()) == {SUCCESS}
    ae, assoc = _move_assoc(server.dimse_port)
    try:
        study = _identifier("STUDY", StudyInstanceUID=_study_uid(archive.mixed_study))
        result = _collect(assoc.send_c_move(study, "GONE", StudyRootQueryRetrieveInformationModelMove), Retrieve())
        assert result.final_status == UNABLE_TO_PERFORM, hex(result.final_status)
        assert "ErrorComment" in result.final
        assert sorted(result.failed_uids()) == sorted(i.sop_instance for i in archive.mixed_study)
        assert int(assoc.send_c_echo().Status) == SUCCESS
        assoc.release()
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()
    metrics = server.metrics()
    assert metrics.get("nectar_retrieve_destination_errors_total") == 1
    assert metrics.get("nectar_retrieves_total") == 1
