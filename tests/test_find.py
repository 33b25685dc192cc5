"""C-FIND against nectar loaded with the public corpus, from dcmtk's findscu and
pynetdicom, checked against sets computed from the corpus files with pydicom and,
in a loopback-only namespace, against Orthanc loaded with the same files.

The corpus is sent once per module with dcmtk's storescu. Expected results come
from the files nectar stored with status Success: several files share a SOP Instance
UID, and nectar keeps the copy sent last ("newest copy wins"), so the
expected model keeps the last copy too. Patient and study attributes come from
the newest instance of the patient or study, as in nectar's manifest.
"""

from __future__ import annotations

import fnmatch
import re
import struct
import tempfile
import warnings
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO

import dicomdata  # noqa: F401 - patches a pynetdicom reactor race for associations
import peers
from nectar import Nectar
from pdu import EXPLICIT_LE, P_DATA_TF, VERIFICATION, Raw, Response, command_set, p_data, parse_command, pdv
from pdu import uid as pdu_uid
from peers import run_dcmtk, storescu

PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
FIND_TIMEOUT = 120

_FINAL = re.compile(r"Received Final Find Response \(([^)]*)\)")


# ------------------------------------------------------------------- expected model


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


@dataclass
class Corpus:
    """The instances nectar stores after the corpus was sent, one copy per SOP Instance UID."""

    instances: OrderedDict = field(default_factory=OrderedDict)  # SOP Instance UID -> Dataset, send order

    def studies(self) -> dict[str, list[Dataset]]:
        out: dict[str, list[Dataset]] = defaultdict(list)
        for ds in self.instances.values():
            out[_text(ds, "StudyInstanceUID")].append(ds)
        return out

    def series(self) -> dict[str, list[Dataset]]:
        out: dict[str, list[Dataset]] = defaultdict(list)
        for ds in self.instances.values():
            out[_text(ds, "SeriesInstanceUID")].append(ds)
        return out

    def study_attribute(self, study_uid: str, keyword: str) -> str:
        """The value nectar's manifest keeps: that of the newest instance of the study."""
        return _text(self.studies()[study_uid][-1], keyword)

    def patient_key(self, study_uid: str) -> tuple[str, str]:
        """The manifest's key of the patient a study belongs to: (PatientID,
        IssuerOfPatientID), or one patient per study when PatientID is empty."""
        return _patient_key(self.studies()[study_uid][-1])

    def patient_attribute(self, study_uid: str, keyword: str) -> str:
        """A patient attribute as the manifest keeps it: from the newest instance of that patient."""
        key = self.patient_key(study_uid)
        newest = [ds for ds in self.instances.values() if _patient_key(ds) == key][-1]
        return _text(newest, keyword)

    def patients(self) -> dict[tuple[str, str], set[str]]:
        """Patient key -> Study Instance UIDs of the patient."""
        out: dict[tuple[str, str], set[str]] = defaultdict(set)
        for uid in self.studies():
            out[self.patient_key(uid)].add(uid)
        return out


def _patient_key(ds: Dataset) -> tuple[str, str]:
    if not _text(ds, "PatientID"):
        return "", "study " + _text(ds, "StudyInstanceUID")
    return _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")


@dataclass
class Loaded:
    nectar: Nectar
    corpus: Corpus
    files: list  # CorpusFile stored by nectar, in send order


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True, stop_before_pixels=True)


def _send_corpus(port: int, files) -> list:
    """storescu once per transfer syntax option; returns the files nectar stored, in send order."""
    groups: OrderedDict[str, list] = OrderedDict()
    for f in files:
        groups.setdefault(f.storescu_option, []).append(f)
    stored = []
    for option, group in groups.items():
        run = storescu(port, [f.path for f in group], option)
        for f in group:
            if run.status.get(str(f.path)) == "Success":
                stored.append(f)
    return stored


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, nectar_binary, corpus_files) -> Loaded:
    base = tmp_path_factory.mktemp("find")
    server = Nectar(base / "data", base / "logs")
    server.start()
    try:
        sendable = [f for f in corpus_files if f.sendable]
        stored = _send_corpus(server.dimse_port, sendable)
        refused = [f.rel for f in sendable if f not in stored]
        # Only data sets without Study or Series Instance UID may be refused.
        assert all(not f.has_study_series for f in sendable if f.rel in refused), refused
        assert len(stored) >= 200, f"only {len(stored)} corpus files stored"
        model = Corpus()
        for f in stored:
            ds = _read(f.path)
            uid = _text(ds, "SOPInstanceUID")
            model.instances.pop(uid, None)  # the newest copy wins, and moves to the end
            model.instances[uid] = ds
        yield Loaded(server, model, stored)
    finally:
        rc = server.stop()
        assert rc == 0, f"nectar serve exited {rc}\n{server.log_tail()}"


# ----------------------------------------------------------------------- SCU helpers


@dataclass
class FindResult:
    status: str  # findscu's words for the final status, e.g. "Success", "Canceled"
    identifiers: list[Dataset]
    output: str

    def values(self, keyword: str) -> list[str]:
        return [_text(ds, keyword) for ds in self.identifiers]


def findscu(port: int, model: str, keys: list[str], *, query: Dataset | None = None, called: str = "NECTAR",
            extra: tuple = ()) -> FindResult:
    """One findscu run (-P Patient Root, -S Study Root); responses are read back
    from the files findscu extracts (-X)."""
    out = Path(tempfile.mkdtemp(prefix="findscu-"))
    args = ["findscu", "-v", model, "-aec", called, "-aet", "FINDSCU", "-to", "10", "-ta", "10",
            "-td", "60", "-X", "-od", str(out), *extra]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(port)]
    if query is not None:
        query_file = out / "query.dcm"
        query.save_as(query_file, enforce_file_format=False, implicit_vr=False, little_endian=True)
        args.append(str(query_file))
    p = run_dcmtk(args, timeout=FIND_TIMEOUT)
    output = p.stdout + p.stderr
    found = _FINAL.findall(output)
    status = found[-1] if found else f"no final response (exit {p.returncode})"
    identifiers = [_read(f) for f in sorted(out.glob("rsp*.dcm"))]
    return FindResult(status, identifiers, output)


def pynetdicom_find(port: int, sop_class: str, query: Dataset, cancel: bool = False):
    """C-FIND from pynetdicom; -> (final status, [identifiers of Pending responses]).
    With `cancel`, C-CANCEL-RQ follows the request at once (send_c_find sends the
    request before it returns its response generator)."""
    from pynetdicom import AE

    ae = AE(ae_title="PYFINDSCU")
    ae.acse_timeout = 10
    ae.dimse_timeout = 60
    ae.network_timeout = 60
    ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="NECTAR")
    assert assoc.is_established, "association with nectar rejected"
    identifiers = []
    final = None
    try:
        responses = assoc.send_c_find(query, sop_class, msg_id=1)
        if cancel:
            assoc.send_c_cancel(1, query_model=sop_class)
        for status, identifier in responses:
            assert status is not None, "no C-FIND response within the DIMSE timeout"
            if status.Status in (0xFF00, 0xFF01):
                identifiers.append(identifier)
            else:
                final = status
    finally:
        assoc.release()
    return final, identifiers


def _uid_query(level: str, **values) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _pn_match(pattern: str, value: str) -> bool:
    """PN wildcard matching as nectar documents it: case-insensitive, `*` and `?`."""
    if pattern in ("", "*"):
        return True
    value = value.rstrip("^= ").lower()
    return fnmatch.fnmatchcase(value, pattern.lower().replace("[", "[[]"))


# ---------------------------------------------------------------------------- tests


def test_study_root_study_level_all(loaded):
    result = findscu(loaded.nectar.dimse_port, "-S",
                     ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "ModalitiesInStudy",
                      "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyDescription",
                      "RetrieveAETitle"])
    assert result.status == "Success", result.output[-2000:]
    studies = loaded.corpus.studies()
    got = result.values("StudyInstanceUID")
    assert sorted(got) == sorted(studies), "study UIDs differ from the stored corpus"
    for ds in result.identifiers:
        uid = _text(ds, "StudyInstanceUID")
        instances = studies[uid]
        assert int(ds.NumberOfStudyRelatedInstances) == len(instances), uid
        series = {_text(i, "SeriesInstanceUID") for i in instances}
        assert int(ds.NumberOfStudyRelatedSeries) == len(series), uid
        modalities = {_text(i, "Modality") for i in instances} - {""}
        assert set(_text(ds, "ModalitiesInStudy").split("\\")) - {""} == modalities, uid
        assert "StudyDescription" in ds, "a requested key must be present, even when empty"
        assert _text(ds, "RetrieveAETitle") == loaded.nectar.ae_title


def test_patient_root_patient_level(loaded):
    result = findscu(loaded.nectar.dimse_port, "-P",
                     ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName", "NumberOfPatientRelatedStudies"])
    assert result.status == "Success", result.output[-2000:]
    patients = loaded.corpus.patients()
    assert sorted(result.values("PatientID")) == sorted(pid for pid, _ in patients)
    studies_by_id: dict[str, list[int]] = defaultdict(list)
    for (pid, _), studies in patients.items():
        studies_by_id[pid].append(len(studies))
    for ds in result.identifiers:
        assert int(ds.NumberOfPatientRelatedStudies) in studies_by_id[_text(ds, "PatientID")]


def _patient_with_most_studies(corpus: Corpus) -> str:
    patients = {pid: studies for (pid, issuer), studies in corpus.patients().items() if pid and not issuer}
    return max(patients, key=lambda pid: len(patients[pid]))


def test_patient_root_study_level(loaded):
    patient_id = _patient_with_most_studies(loaded.corpus)
    result = findscu(loaded.nectar.dimse_port, "-P",
                     ["QueryRetrieveLevel=STUDY", f"PatientID={patient_id}", "StudyInstanceUID"])
    assert result.status == "Success", result.output[-2000:]
    expected = {uid for (pid, _), studies in loaded.corpus.patients().items() if pid == patient_id
                for uid in studies}
    assert sorted(result.values("StudyInstanceUID")) == sorted(expected)
    assert set(result.values("PatientID")) == {patient_id}


def _study_with_most_series(corpus: Corpus) -> str:
    studies = corpus.studies()
    return max(studies, key=lambda uid: len({_text(ds, "SeriesInstanceUID") for ds in studies[uid]}))


@pytest.mark.parametrize("model", ["-S", "-P"])
def test_series_level(loaded, model):
    study_uid = _study_with_most_series(loaded.corpus)
    instances = loaded.corpus.studies()[study_uid]
    keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}", "SeriesInstanceUID", "Modality",
            "NumberOfSeriesRelatedInstances"]
    if model == "-P":
        keys.append(f"PatientID={_text(instances[-1], 'PatientID')}")
    result = findscu(loaded.nectar.dimse_port, model, keys)
    assert result.status == "Success", result.output[-2000:]
    expected: dict[str, list[Dataset]] = defaultdict(list)
    for ds in instances:
        expected[_text(ds, "SeriesInstanceUID")].append(ds)
    assert sorted(result.values("SeriesInstanceUID")) == sorted(expected)
    for ds in result.identifiers:
        series = expected[_text(ds, "SeriesInstanceUID")]
        assert int(ds.NumberOfSeriesRelatedInstances) == len(series)
        assert _text(ds, "Modality") == _text(series[-1], "Modality")
        assert _text(ds, "StudyInstanceUID") == study_uid


@pytest.mark.parametrize("model", ["-S", "-P"])
def test_image_level(loaded, model):
    series = loaded.corpus.series()
    series_uid = max(series, key=lambda uid: len(series[uid]))
    first = series[series_uid][-1]
    keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={_text(first, 'StudyInstanceUID')}",
            f"SeriesInstanceUID={series_uid}", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"]
    if model == "-P":
        keys.append(f"PatientID={_text(first, 'PatientID')}")
    result = findscu(loaded.nectar.dimse_port, model, keys)
    assert result.status == "Success", result.output[-2000:]
    expected = {_text(ds, "SOPInstanceUID"): ds for ds in series[series_uid]}
    assert sorted(result.values("SOPInstanceUID")) == sorted(expected)
    for ds in result.identifiers:
        source = expected[_text(ds, "SOPInstanceUID")]
        assert _text(ds, "SOPClassUID") == _text(source, "SOPClassUID")
        if _text(source, "InstanceNumber"):
            assert int(ds.InstanceNumber) == int(source.InstanceNumber)


def _names(corpus: Corpus) -> list[str]:
    return sorted({corpus.patient_attribute(uid, "PatientName") for uid in corpus.studies()} - {""})


def _studies_where(corpus: Corpus, keyword: str, predicate) -> set[str]:
    """Studies whose study (or, for patient attributes, patient) value satisfies `predicate`."""
    value = corpus.patient_attribute if keyword.startswith("Patient") else corpus.study_attribute
    return {uid for uid in corpus.studies() if predicate(value(uid, keyword))}


def test_patient_name_wildcards(loaded):
    port = loaded.nectar.dimse_port
    names = _names(loaded.corpus)
    name = next(n for n in names if len(n) >= 4 and n[0].isalpha())
    patterns = ["*", f"{name[:2]}*", f"?{name[1:3].lower()}*", f"{name.swapcase()}"]
    for pattern in patterns:
        result = findscu(port, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", f"PatientName={pattern}"])
        assert result.status == "Success", result.output[-2000:]
        expected = _studies_where(loaded.corpus, "PatientName", lambda v: _pn_match(pattern, v))
        assert set(result.values("StudyInstanceUID")) == expected, pattern
        assert len(result.identifiers) == len(expected), pattern
    assert expected, f"case-insensitive match of {name.swapcase()!r} found nothing"


@pytest.mark.parametrize("date_range", ["20000101-", "-20100101", "20000101-20100101"])
def test_study_date_range(loaded, date_range):
    lower, upper = date_range.split("-")
    result = findscu(loaded.nectar.dimse_port, "-S",
                     ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", f"StudyDate={date_range}"])
    assert result.status == "Success", result.output[-2000:]

    def inside(value: str) -> bool:
        return bool(value) and (not lower or value >= lower) and (not upper or value <= upper)

    expected = _studies_where(loaded.corpus, "StudyDate", inside)
    assert expected, f"no corpus study in {date_range}: the check would prove nothing"
    assert sorted(result.values("StudyInstanceUID")) == sorted(expected)
    for ds in result.identifiers:
        assert inside(_text(ds, "StudyDate")), _text(ds, "StudyDate")


def test_study_uid_list(loaded):
    chosen = sorted(loaded.corpus.studies())[::7][:5]
    result = findscu(loaded.nectar.dimse_port, "-S",
                     ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(chosen + ["1.2.3.4.5.6.7.404"])])
    assert result.status == "Success", result.output[-2000:]
    assert sorted(result.values("StudyInstanceUID")) == sorted(chosen)


def test_modality(loaded):
    corpus = loaded.corpus
    study_uids = sorted(corpus.studies())
    result = findscu(loaded.nectar.dimse_port, "-S",
                     ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "ModalitiesInStudy=MR"])
    assert result.status == "Success", result.output[-2000:]
    expected = {uid for uid in study_uids if any(_text(ds, "Modality") == "MR" for ds in corpus.studies()[uid])}
    assert expected
    assert set(result.values("StudyInstanceUID")) == expected

    query = _uid_query("SERIES", StudyInstanceUID=study_uids, SeriesInstanceUID="", Modality="CT")
    result = findscu(loaded.nectar.dimse_port, "-S", [], query=query)
    assert result.status == "Success", result.output[-2000:]
    expected = {uid for uid, items in corpus.series().items() if _text(items[-1], "Modality") == "CT"}
    assert expected
    assert set(result.values("SeriesInstanceUID")) == expected


def _code_values(ds: Dataset, sequence: str) -> list[str]:
    return [_text(item, "CodeValue") for item in ds.get(sequence, []) or []]


def test_sequence_matching(loaded):
    corpus = loaded.corpus
    counts: dict[str, int] = defaultdict(int)
    for ds in corpus.instances.values():
        for value in set(_code_values(ds, "DerivationCodeSequence")):
            counts[value] += 1
    assert counts, "no corpus instance has DerivationCodeSequence"
    code = max(counts, key=counts.get)
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = ""
    query = _uid_query("IMAGE", StudyInstanceUID=sorted(corpus.studies()), SeriesInstanceUID=sorted(corpus.series()),
                       SOPInstanceUID="")
    query.DerivationCodeSequence = [item]
    result = findscu(loaded.nectar.dimse_port, "-S", [], query=query)
    assert result.status == "Success", result.output[-2000:]
    expected = {uid for uid, ds in corpus.instances.items() if code in _code_values(ds, "DerivationCodeSequence")}
    assert sorted(result.values("SOPInstanceUID")) == sorted(expected)
    for ds in result.identifiers:
        returned = _code_values(ds, "DerivationCodeSequence")
        assert returned and set(returned) == {code}, "only matching items come back"


def _all_images_query(corpus: Corpus) -> Dataset:
    """An IMAGE level query over every stored instance that also asks for
    ImageType, which nectar reads from each stored data set."""
    return _uid_query("IMAGE", StudyInstanceUID=sorted(corpus.studies()), SeriesInstanceUID=sorted(corpus.series()),
                      SOPInstanceUID="", ImageType="")


def test_cancel_findscu(loaded):
    """findscu sends C-CANCEL-RQ after the first response. nectar reads a stored
    data set for each of the ~200 matches, so the cancel arrives before the last one."""
    result = findscu(loaded.nectar.dimse_port, "-S", [], query=_all_images_query(loaded.corpus),
                     extra=("--cancel", "1"))
    assert result.status == "Cancel: MatchingTerminatedDueToCancelRequest", result.output[-2000:]
    assert 1 <= len(result.identifiers) < len(loaded.corpus.instances)
    # A cancelled query leaves nothing behind: the next one runs to the end.
    result = findscu(loaded.nectar.dimse_port, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
    assert result.status == "Success"
    assert len(result.identifiers) == len(loaded.corpus.studies())


def _read_find_responses(raw: Raw) -> tuple[list[int], int]:
    """Reads C-FIND-RSPs up to the final one -> (statuses of Pending responses, final status)."""
    pending: list[int] = []
    command = b""
    while True:
        pdu_type, body = raw.recv_pdu()
        assert pdu_type == P_DATA_TF, f"expected P-DATA-TF, got PDU type {pdu_type}"
        position = 0
        while position < len(body):
            (item_length,) = struct.unpack_from(">I", body, position)
            header = body[position + 5]
            data = body[position + 6 : position + 4 + item_length]
            position += 4 + item_length
            if not header & 0x01:
                continue  # an identifier of a Pending response
            command += data
            if header & 0x02:
                response = Response(parse_command(command))
                command = b""
                if response.status in (0xFF00, 0xFF01):
                    pending.append(response.status)
                else:
                    return pending, response.status


def _encode_identifier(ds: Dataset) -> bytes:
    """The data set in Explicit VR Little Endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    pydicom.filewriter.write_dataset(buffer, ds)
    return buffer.getvalue()


def test_cancel_sent_with_request(loaded):
    """A C-CANCEL-RQ that arrives in the same write as its C-FIND-RQ stops the
    query before it has sent every match."""
    query = _uid_query("STUDY", StudyInstanceUID="")
    find_rq = command_set([
        (0x0002, pdu_uid(STUDY_ROOT)),
        (0x0100, struct.pack("<H", 0x0020)),
        (0x0110, struct.pack("<H", 7)),
        (0x0700, struct.pack("<H", 0)),
        (0x0800, struct.pack("<H", 0x0000)),
    ])
    cancel_rq = command_set([
        (0x0100, struct.pack("<H", 0x0FFF)),
        (0x0120, struct.pack("<H", 7)),
        (0x0800, struct.pack("<H", 0x0101)),
    ])
    with Raw(loaded.nectar.dimse_port) as raw:
        negotiated = raw.associate(contexts=[(1, STUDY_ROOT, [EXPLICIT_LE]), (3, VERIFICATION, [EXPLICIT_LE])])
        assert negotiated.accepted(1)
        raw.send(p_data(pdv(1, find_rq, True, True)) + p_data(pdv(1, _encode_identifier(query), False, True))
                 + p_data(pdv(1, cancel_rq, True, True)))
        pending, final = _read_find_responses(raw)
        assert final == 0xFE00
        assert len(pending) < len(loaded.corpus.studies())
        # The association serves the next request.
        assert raw.c_echo(context_id=3).status == 0x0000
        raw.release()


@pytest.mark.parametrize("keys, model", [
    (["StudyInstanceUID"], "-S"),                                        # no QueryRetrieveLevel
    (["QueryRetrieveLevel=FRAME", "StudyInstanceUID"], "-S"),            # no such level
    (["QueryRetrieveLevel=PATIENT", "PatientID"], "-S"),                 # Study Root has no PATIENT level
    (["QueryRetrieveLevel=SERIES", "SeriesInstanceUID"], "-S"),          # StudyInstanceUID missing
    (["QueryRetrieveLevel=SERIES", "StudyInstanceUID=1.2*"], "-S"),      # not a single value or list
    (["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], "-P"),            # Patient Root: PatientID missing
    (["QueryRetrieveLevel=STUDY", "StudyDate=2000*"], "-S"),             # wildcard in a date
])
def test_invalid_query(loaded, keys, model):
    result = findscu(loaded.nectar.dimse_port, model, keys)
    # dcmtk 3.6.7 names status 0xA900 "DataSetDoesNotMatchSOPClass".
    assert result.status == "Error: DataSetDoesNotMatchSOPClass", \
        result.output[-2000:]
    assert not result.identifiers


# ------------------------------------------------------------------------ pynetdicom


def test_pynetdicom_study_and_series(loaded):
    corpus = loaded.corpus
    status, identifiers = pynetdicom_find(
        loaded.nectar.dimse_port, STUDY_ROOT,
        _uid_query("STUDY", StudyInstanceUID="", StudyDate="20000101-", PatientName="*"))
    assert status is not None and status.Status == 0x0000
    expected = _studies_where(corpus, "StudyDate", lambda v: bool(v) and v >= "20000101")
    assert sorted(_text(ds, "StudyInstanceUID") for ds in identifiers) == sorted(expected)

    study_uid = _study_with_most_series(corpus)
    patient_id = corpus.study_attribute(study_uid, "PatientID")
    status, identifiers = pynetdicom_find(
        loaded.nectar.dimse_port, PATIENT_ROOT,
        _uid_query("SERIES", PatientID=patient_id, StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality=""))
    assert status.Status == 0x0000
    expected = {_text(ds, "SeriesInstanceUID") for ds in corpus.studies()[study_uid]}
    assert {_text(ds, "SeriesInstanceUID") for ds in identifiers} == expected


def test_pynetdicom_cancel(loaded):
    """The cancel follows the request at once, long before the last of ~200
    matches that each need a stored data set."""
    status, identifiers = pynetdicom_find(
        loaded.nectar.dimse_port, STUDY_ROOT, _all_images_query(loaded.corpus), cancel=True)
    assert status is not None
    assert status.Status == 0xFE00
    assert len(identifiers) < len(loaded.corpus.instances)


def test_pynetdicom_invalid(loaded):
    status, identifiers = pynetdicom_find(
        loaded.nectar.dimse_port, STUDY_ROOT, _uid_query("IMAGE", SOPInstanceUID=""))
    assert status is not None and status.Status == 0xA900
    assert "ErrorComment" in status
    assert "(0020,000D)" in status.ErrorComment
    assert not identifiers


# ---------------------------------------------------------------------------- Orthanc


@pytest.fixture(scope="module")
def orthanc_loaded(tmp_path_factory, loaded):
    if not peers.loopback_only():
        pytest.skip(peers.ALL_INTERFACE_PEERS)
    from orthanc import Orthanc

    with Orthanc(tmp_path_factory.mktemp("orthanc")) as orthanc:
        orthanc.upload([f.path for f in loaded.files])
        yield orthanc


def test_orthanc_same_studies_and_series(loaded, orthanc_loaded):
    """nectar and Orthanc return the same UIDs for the same C-FIND queries,
    once the instances Orthanc rejected on upload are set aside."""
    orthanc_instances = orthanc_loaded.sop_instance_uids()
    missing = set(loaded.corpus.instances) - orthanc_instances
    extra = orthanc_instances - set(loaded.corpus.instances)
    assert not extra, f"Orthanc holds instances nectar does not: {sorted(extra)[:5]}"
    # Studies whose every instance Orthanc refused exist only in nectar.
    only_nectar = {uid for uid, items in loaded.corpus.studies().items()
                   if all(_text(ds, "SOPInstanceUID") in missing for ds in items)}

    # Orthanc 1.10.1 matches a study with an empty StudyDate against a range
    # without a lower bound; nectar matches empty values only with universal matching.
    undated = _studies_where(loaded.corpus, "StudyDate", lambda v: not v)
    name = next(n for n in _names(loaded.corpus) if len(n) >= 4 and n[0].isalpha())
    # (keys, studies left out on both sides, studies only Orthanc matches)
    queries = [
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], set(), set()),
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=20000101-"], set(), set()),
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=-20100101"], set(), undated),
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=20000101-20100101"], set(), set()),
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "ModalitiesInStudy=MR"], set(), set()),
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID", f"PatientName={name[:3].lower()}*"], set(), set()),
    ]
    for keys, left_out, only_orthanc in queries:
        ours = findscu(loaded.nectar.dimse_port, "-S", keys)
        theirs = findscu(orthanc_loaded.dicom_port, "-S", keys, called=orthanc_loaded.ae_title)
        assert ours.status == "Success", ours.output[-1000:]
        assert theirs.status == "Success", theirs.output[-1000:]
        ours_uids = set(ours.values("StudyInstanceUID")) - only_nectar - left_out
        theirs_uids = set(theirs.values("StudyInstanceUID")) - only_nectar - left_out
        assert ours_uids.isdisjoint(only_orthanc), keys
        theirs_uids -= only_orthanc
        assert ours_uids == theirs_uids, keys
        assert ours_uids, f"{keys} matched nothing: the comparison would prove nothing"

    study_uid = _study_with_most_series(loaded.corpus)
    keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}", "SeriesInstanceUID", "Modality"]
    ours = findscu(loaded.nectar.dimse_port, "-S", keys)
    theirs = findscu(orthanc_loaded.dicom_port, "-S", keys, called=orthanc_loaded.ae_title)
    missing_series = {uid for uid, items in loaded.corpus.series().items()
                      if all(_text(ds, "SOPInstanceUID") in missing for ds in items)}
    assert set(ours.values("SeriesInstanceUID")) - missing_series == set(theirs.values("SeriesInstanceUID"))


# ----------------------------------------------------------------- character sets

CHARSET_PATIENTS = [
    ("ISO_IR 100", "Müller^Jérôme", "CHARSET0"),
    ("ISO_IR 192", "Παπαδόπουλος^Γιάννης", "CHARSET1"),
    (None, "Smith^Anna", "CHARSET2"),
]


def _charset_query(character_set: str | None, **values) -> Dataset:
    ds = Dataset()
    if character_set:
        ds.SpecificCharacterSet = character_set
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_specific_character_set(nectar, tmp_path):
    """Key values are decoded with the request's character set and compared in
    UTF-8; responses with non-ASCII values are ISO_IR 192."""
    from pydicom.uid import generate_uid

    def tweak(ds, i):
        character_set, name, patient_id = CHARSET_PATIENTS[i]
        if character_set:
            ds.SpecificCharacterSet = character_set
        ds.PatientName = name
        ds.PatientID = patient_id
        ds.StudyInstanceUID = generate_uid(dicomdata.ROOT_UID)
        ds.SeriesInstanceUID = generate_uid(dicomdata.ROOT_UID)

    instances = dicomdata.make_instances(tmp_path / "in", len(CHARSET_PATIENTS), template=None, tweak=tweak)
    statuses = dicomdata.send_all(nectar.dimse_port, instances)
    assert set(statuses.values()) == {0x0000}
    port = nectar.dimse_port

    latin1 = findscu(port, "-S", [], query=_charset_query("ISO_IR 100", PatientName="MÜLLER*"))
    assert latin1.status == "Success", latin1.output[-2000:]
    assert latin1.values("PatientName") == ["Müller^Jérôme"]
    assert latin1.values("SpecificCharacterSet") == ["ISO_IR 192"]

    greek = findscu(port, "-S", [], query=_charset_query("ISO_IR 192", PatientName="παπαδόπουλος*"))
    assert greek.values("PatientName") == ["Παπαδόπουλος^Γιάννης"]
    assert greek.values("SpecificCharacterSet") == ["ISO_IR 192"]

    ascii_latin1 = findscu(port, "-S", [], query=_charset_query("ISO_IR 100", PatientID="CHARSET2", PatientName=""))
    assert ascii_latin1.values("PatientName") == ["Smith^Anna"]
    assert ascii_latin1.values("SpecificCharacterSet") == ["ISO_IR 100"]

    plain = findscu(port, "-S", [], query=_charset_query(None, PatientID="CHARSET2", PatientName=""))
    assert plain.values("PatientName") == ["Smith^Anna"]
    assert "SpecificCharacterSet" not in plain.identifiers[0]
