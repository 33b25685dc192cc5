"""QIDO-RS searches against `nectar serve` loaded with the public corpus over
STOW-RS, driven by the dicomweb-client package and by curl, checked against
sets computed from the corpus files with pydicom and, in a loopback-only
namespace, against Orthanc's DICOMweb plugin loaded with the same files.

The corpus goes in over STOW-RS in batches. Several files share a SOP Instance
UID; nectar keeps the copy stored last, and its patient, study and series
attributes come from the newest instance, so the expected model keeps the last
copy too (the `Corpus` model of test_find.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

import peers
from nectar import Nectar
from peers import storescu
from test_dicomweb import curl, has_study_and_series, multipart_body, referenced_uids
from test_find import Corpus, _names, _pn_match, _read, _studies_where, _study_with_most_series, _text

DICOM_RELATED = 'multipart/related; type="application/dicom"'
STOW_BATCH = 10
HTTP_TIMEOUT = 120


class Loaded:
    def __init__(self, server: Nectar, corpus: Corpus, files: list[Path]):
        self.nectar = server
        self.corpus = corpus
        self.files = files  # Part 10 files nectar stored, in send order
        self.client = DICOMwebClient(server.url("/dicomweb"), timeout=HTTP_TIMEOUT)


def _stow_batches(server: Nectar, paths: list[Path]) -> list[Path]:
    """POSTs `paths` in batches; returns the files nectar stored, in send order."""
    stored = []
    session = requests.Session()
    for start in range(0, len(paths), STOW_BATCH):
        batch = paths[start:start + STOW_BATCH]
        boundary = "qido-" + uuid.uuid4().hex
        body = multipart_body([p.read_bytes() for p in batch], boundary)
        response = session.post(server.url("/dicomweb/studies"), data=body, timeout=HTTP_TIMEOUT,
                                headers={"Content-Type": f'{DICOM_RELATED}; boundary="{boundary}"'})
        assert response.status_code in (200, 202, 409), response.text[:500]
        accepted = set(referenced_uids(response.json()))
        stored += [p for p in batch if _text(_read(p), "SOPInstanceUID") in accepted]
    return stored


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, nectar_binary, corpus_files) -> Loaded:
    base = tmp_path_factory.mktemp("qido")
    server = Nectar(base / "data", base / "logs")
    server.start()
    try:
        paths = [f.path for f in corpus_files if f.has_meta and has_study_and_series(f.path)]
        stored = _stow_batches(server, paths)
        assert len(stored) >= 200, f"only {len(stored)} corpus files stored over STOW-RS"
        model = Corpus()
        for path in stored:
            ds = _read(path)
            uid = _text(ds, "SOPInstanceUID")
            model.instances.pop(uid, None)  # the newest copy wins, and moves to the end
            model.instances[uid] = ds
        yield Loaded(server, model, stored)
    finally:
        rc = server.stop()
        assert rc == 0, f"nectar serve exited {rc}\n{server.log_tail()}"


# ----------------------------------------------------------------------------- helpers


def values(results: list[dict], tag: str) -> list[str]:
    """The first value of `tag` in each result, as text ('' when absent or empty)."""
    out = []
    for result in results:
        value = result.get(tag, {}).get("Value") or [""]
        first = value[0]
        out.append(first.get("Alphabetic", "") if isinstance(first, dict) else str(first))
    return out


STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def series_value(corpus: Corpus, series_uid: str, keyword: str) -> str:
    """A series attribute as the manifest keeps it: from the newest instance of the series."""
    return _text(corpus.series()[series_uid][-1], keyword)


# ----------------------------------------------------------------------------- searches


def test_all_studies_with_counts_and_retrieve_url(loaded):
    results = loaded.client.search_for_studies()
    studies = loaded.corpus.studies()
    assert sorted(values(results, STUDY_UID)) == sorted(studies)
    for result in results:
        uid = result[STUDY_UID]["Value"][0]
        assert result["00201208"]["Value"] == [len(studies[uid])], uid
        series = {_text(ds, "SeriesInstanceUID") for ds in studies[uid]}
        assert result["00201206"]["Value"] == [len(series)], uid
        assert result["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{uid}")
        assert result["00080056"]["Value"] == ["ONLINE"]
        assert "00080052" not in result, "QueryRetrieveLevel is not part of a QIDO-RS response"


def test_patient_name_wildcards(loaded):
    names = _names(loaded.corpus)
    name = next(n for n in names if len(n) >= 4 and n[0].isalpha())
    patterns = [f"{name[:2]}*", f"?{name[1:3].lower()}*", name.swapcase()]
    for pattern in patterns:
        for fuzzy in (None, True):
            results = loaded.client.search_for_studies(search_filters={"PatientName": pattern}, fuzzymatching=fuzzy)
            expected = _studies_where(loaded.corpus, "PatientName", lambda v: _pn_match(pattern, v))
            assert sorted(values(results, STUDY_UID)) == sorted(expected), (pattern, fuzzy)
    assert expected, f"case-insensitive match of {name.swapcase()!r} found nothing"


@pytest.mark.parametrize("date_range", ["20000101-", "-20100101", "20000101-20100101"])
def test_study_date_range(loaded, date_range):
    lower, upper = date_range.split("-")

    def inside(value: str) -> bool:
        return bool(value) and (not lower or value >= lower) and (not upper or value <= upper)

    results = loaded.client.search_for_studies(search_filters={"StudyDate": date_range})
    expected = _studies_where(loaded.corpus, "StudyDate", inside)
    assert expected, f"no corpus study in {date_range}: the check would prove nothing"
    assert sorted(values(results, STUDY_UID)) == sorted(expected)
    assert all(inside(v) for v in values(results, "00080020"))


def test_modality_and_modalities_in_study(loaded):
    corpus = loaded.corpus
    series = loaded.client.search_for_series(search_filters={"Modality": "MR"})
    expected = {uid for uid in corpus.series() if series_value(corpus, uid, "Modality") == "MR"}
    assert expected
    assert sorted(values(series, SERIES_UID)) == sorted(expected)
    # A search across studies carries the study attributes too.
    assert all(v for v in values(series, STUDY_UID))
    assert "00100010" in series[0]
    assert "00080020" in series[0]

    studies = loaded.client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    expected_studies = {_text(corpus.series()[uid][-1], "StudyInstanceUID") for uid in expected}
    assert sorted(values(studies, STUDY_UID)) == sorted(expected_studies)


def test_includefield_all_and_listed(loaded):
    corpus = loaded.corpus
    results = loaded.client.search_for_studies(fields=["all"])
    assert len(results) == len(corpus.studies())
    for result in results:
        uid = result[STUDY_UID]["Value"][0]
        assert "00081030" in result, "StudyDescription missing with includefield=all"
        assert values([result], "00081030") == [corpus.study_attribute(uid, "StudyDescription")], uid
        assert "00080062" in result, "SOPClassesInStudy missing with includefield=all"

    listed = loaded.client.search_for_studies(fields=["StudyDescription", "00101010"])
    assert all("00081030" in r and "00101010" in r for r in listed)
    plain = loaded.client.search_for_studies()
    assert all("00081030" not in r for r in plain)


def test_limit_offset_pages(loaded):
    full = loaded.client.search_for_instances()
    assert sorted(values(full, SOP_UID)) == sorted(loaded.corpus.instances)
    pages, offset, size = [], 0, 17
    while True:
        page = loaded.client.search_for_instances(limit=size, offset=offset)
        assert len(page) <= size
        if not page:
            break
        pages += values(page, SOP_UID)
        offset += size
    assert pages == values(full, SOP_UID), "pages differ from the full result, or overlap"
    assert len(set(pages)) == len(pages)


def test_every_route(loaded):
    corpus, client = loaded.corpus, loaded.client
    study_uid = _study_with_most_series(corpus)
    in_study = corpus.studies()[study_uid]
    series_uids = {_text(ds, "SeriesInstanceUID") for ds in in_study}
    assert len(series_uids) >= 2

    assert sorted(values(client.search_for_series(), SERIES_UID)) == sorted(corpus.series())
    found = client.search_for_series(study_instance_uid=study_uid)
    assert sorted(values(found, SERIES_UID)) == sorted(series_uids)
    assert "00100010" not in found[0], "a search inside a study repeats no study attributes"
    assert found[0]["00081190"]["Value"][0].endswith(f"/studies/{study_uid}/series/{found[0][SERIES_UID]['Value'][0]}")

    found = client.search_for_instances(study_instance_uid=study_uid)
    assert sorted(values(found, SOP_UID)) == sorted(_text(ds, "SOPInstanceUID") for ds in in_study)
    assert "00080060" in found[0]
    assert "00100010" not in found[0]

    series_uid = sorted(series_uids)[0]
    found = client.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid)
    expected = [ds for ds in corpus.series()[series_uid]]
    assert sorted(values(found, SOP_UID)) == sorted(_text(ds, "SOPInstanceUID") for ds in expected)
    by_uid = {_text(ds, "SOPInstanceUID"): ds for ds in expected}
    for result in found:
        ds = by_uid[result[SOP_UID]["Value"][0]]
        assert values([result], "00080016") == [_text(ds, "SOPClassUID")]
        if "Rows" in ds:
            assert result["00280010"]["Value"] == [ds.Rows]
        assert "00080060" not in result, "a search inside a series repeats no series attributes"
        retrieved = result["00081190"]["Value"][0]
        assert retrieved.endswith(f"/studies/{study_uid}/series/{series_uid}/instances/{_text(ds, 'SOPInstanceUID')}")


def test_uid_list_with_commas(loaded):
    chosen = sorted(loaded.corpus.studies())[::7][:5]
    results = loaded.client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(chosen + ["1.2.3.404"])})
    assert sorted(values(results, STUDY_UID)) == chosen


def test_sequence_key_in_dotted_form(loaded, tmp_path):
    """A series whose Request Attributes Sequence has a Requested Procedure ID is
    found by that value through the dotted attribute path."""
    corpus = loaded.corpus
    procedure_ids = {}
    for uid, instances in corpus.series().items():
        items = instances[-1].get("RequestAttributesSequence") or []
        ids = [_text(item, "RequestedProcedureID") for item in items]
        procedure_ids[uid] = [i for i in ids if i]
    candidates = sorted(uid for uid, ids in procedure_ids.items() if ids)
    if not candidates:
        pytest.skip("no corpus series has a Requested Procedure ID")
    value = procedure_ids[candidates[0]][0]
    expected = sorted(uid for uid, ids in procedure_ids.items() if value in ids)
    results = loaded.client.search_for_series(search_filters={"00400275.00401001": value})
    assert sorted(values(results, SERIES_UID)) == expected


def test_cstore_instance_found(loaded, tmp_path, corpus_files):
    """An instance stored by dcmtk's storescu is found by name, by study and by series."""
    ds = pydicom.dcmread(next(f.path for f in corpus_files if f.rel == "pydicom/CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID = "Qido^Storescu", "QIDO-STORESCU"
    path = tmp_path / "cstore.dcm"
    ds.save_as(path)
    run = storescu(loaded.nectar.dimse_port, [path])
    assert run.succeeded() == [str(path)], run.output

    client = loaded.client
    studies = client.search_for_studies(search_filters={"PatientName": "qido^stor*"})
    assert values(studies, STUDY_UID) == [ds.StudyInstanceUID]
    instances = client.search_for_instances(study_instance_uid=ds.StudyInstanceUID,
                                            series_instance_uid=ds.SeriesInstanceUID)
    assert values(instances, SOP_UID) == [ds.SOPInstanceUID]
    series = client.search_for_series(search_filters={"SeriesInstanceUID": ds.SeriesInstanceUID})
    assert values(series, "00080060") == [ds.Modality]


# ----------------------------------------------------------------------------- status codes


def test_status_codes(loaded, tmp_path):
    url = loaded.nectar.url

    def error(path: str, *args: str) -> tuple[int, str]:
        status, headers, body = curl(url(path), tmp_path, *args)
        reason = json.loads(body)["error"] if body else ""
        return status, reason

    status, reason = error("/dicomweb/studies?NoSuchAttribute=1")
    assert status == 400
    assert "NoSuchAttribute" in reason
    status, reason = error("/dicomweb/studies?StudyDate=2001-02-03")
    assert status == 400
    assert "StudyDate" in reason
    assert error("/dicomweb/studies?StudyDate=2001*")[0] == 400
    assert error("/dicomweb/studies?0010001G=x")[0] == 400
    assert error("/dicomweb/studies?limit=-3")[0] == 400
    assert error("/dicomweb/studies?Modality=CT")[0] == 400
    assert error("/dicomweb/series?fuzzymatching=perhaps")[0] == 400
    assert error("/dicomweb/studies", "-H", "Accept: application/dicom")[0] == 406
    assert error("/dicomweb/instances", "-H", 'Accept: multipart/related; type="application/dicom"')[0] == 406

    for accept in ("application/dicom+json", "application/json", "*/*"):
        status, headers, body = curl(url("/dicomweb/studies?limit=1"), tmp_path, "-H", f"Accept: {accept}")
        assert status == 200, accept
        assert headers["content-type"].startswith("application/dicom+json"), accept
        assert len(json.loads(body)) == 1

    status, headers, body = curl(url("/dicomweb/studies?PatientName=NoSuchPatient*"), tmp_path)
    assert (status, body) == (204, b"")
    assert "warning" not in headers
    status, headers, body = curl(url("/dicomweb/studies?limit=1&fuzzymatching=true"), tmp_path)
    assert status == 200
    assert headers["warning"].startswith("299 "), headers
    assert loaded.client.search_for_studies(search_filters={"PatientName": "NoSuchPatient*"}) == []


# ----------------------------------------------------------------------------- Orthanc


@pytest.fixture(scope="module")
def orthanc_loaded(tmp_path_factory, loaded):
    if not peers.loopback_only():
        pytest.skip(peers.ALL_INTERFACE_PEERS)
    from orthanc import Orthanc

    with Orthanc(tmp_path_factory.mktemp("orthanc-qido"), dicomweb=True) as orthanc:
        orthanc.upload(loaded.files)
        yield orthanc


def test_orthanc_same_uids(loaded, orthanc_loaded):
    """nectar and Orthanc's DICOMweb plugin return the same UIDs for the same
    searches, once the instances Orthanc rejected on upload are set aside."""
    corpus = loaded.corpus
    orthanc_instances = orthanc_loaded.sop_instance_uids()
    missing = set(corpus.instances) - orthanc_instances
    assert not orthanc_instances - set(corpus.instances)
    only_nectar_studies = {uid for uid, items in corpus.studies().items()
                           if all(_text(ds, "SOPInstanceUID") in missing for ds in items)}
    only_nectar_series = {uid for uid, items in corpus.series().items()
                          if all(_text(ds, "SOPInstanceUID") in missing for ds in items)}

    def orthanc_search(resource: str, filters: dict[str, str]) -> list[dict]:
        # Orthanc 1.10.1 does not percent-decode QIDO-RS values (PatientName=Ano%2A
        # matches nothing), so the query string goes out unencoded; every value
        # here is letters, digits, '*' and '-'.
        query = "&".join(f"{key}={value}" for key, value in filters.items())
        response = requests.get(f"{orthanc_loaded.base_url}/dicom-web/{resource}?{query}", timeout=HTTP_TIMEOUT,
                                headers={"Accept": "application/dicom+json"})
        assert response.status_code in (200, 204), response.text[:500]
        return response.json() if response.content else []

    # Orthanc matches a study with an empty StudyDate against a range without a
    # lower bound; nectar matches empty values only with universal matching.
    undated = _studies_where(corpus, "StudyDate", lambda v: not v)
    name = next(n for n in _names(corpus) if len(n) >= 4 and n[0].isalpha())
    # (resource, filters, UID tag, UIDs only Orthanc matches)
    searches = [
        ("studies", {}, STUDY_UID, set()),
        ("studies", {"StudyDate": "20000101-"}, STUDY_UID, set()),
        ("studies", {"StudyDate": "-20100101"}, STUDY_UID, undated),
        ("studies", {"StudyDate": "20000101-20100101"}, STUDY_UID, set()),
        ("studies", {"ModalitiesInStudy": "MR"}, STUDY_UID, set()),
        ("studies", {"PatientName": f"{name[:3].lower()}*"}, STUDY_UID, set()),
        ("series", {"Modality": "MR"}, SERIES_UID, set()),
    ]
    for resource, filters, tag, only_orthanc in searches:
        search = {"studies": "search_for_studies", "series": "search_for_series"}[resource]
        ours = set(values(getattr(loaded.client, search)(search_filters=filters), tag))
        theirs = set(values(orthanc_search(resource, filters), tag))
        # test_cstore_instance_found stored one study in nectar alone.
        known = set(corpus.studies()) if tag == STUDY_UID else set(corpus.series())
        left_out = only_nectar_studies if tag == STUDY_UID else only_nectar_series
        ours = (ours & known) - left_out
        assert ours.isdisjoint(only_orthanc), filters
        assert ours == theirs - only_orthanc, (resource, filters, sorted(ours ^ theirs)[:5])
        assert ours, f"{filters} matched nothing: the comparison would prove nothing"

    study_uid = _study_with_most_series(corpus)
    ours = set(values(loaded.client.search_for_series(study_instance_uid=study_uid), SERIES_UID))
    theirs = set(values(orthanc_search(f"studies/{study_uid}/series", {}), SERIES_UID))
    assert ours - only_nectar_series == theirs
