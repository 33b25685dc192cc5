"""DICOMweb STOW-RS and WADO-RS against `nectar serve`, driven by curl and by
the dicomweb-client package.

STOW-RS parts are the corpus files exactly as stored on disk, so WADO-RS must
return the same bytes: nectar keeps a STOW-RS part as sent (preamble, File
Meta and data set). Instances stored over C-STORE get a File Meta written by
nectar, so for those the data set bytes are compared.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import uuid
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

import corpus
from compare import diff, read_any
from peers import storescu

CURL_TIMEOUT = 300
DICOM_RELATED = 'multipart/related; type="application/dicom"'
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# Failure Reason (0008,1197) values nectar sends.
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNSUPPORTED_MEDIA_TYPE = 0x0122
STUDY_INSTANCE_UID_MISMATCH = 0xC409
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


# ----------------------------------------------------------------------------- helpers


def multipart_body(parts: list[bytes], boundary: str, part_type: str = "application/dicom",
                   content_length: bool = False) -> bytes:
    body = b""
    for part in parts:
        length = f"Content-Length: {len(part)}\r\n" if content_length else ""
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n{length}\r\n".encode() + part + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def curl(url: str, tmp_path: Path, *args: str, data: Path | None = None) -> tuple[int, dict[str, str], bytes]:
    """One curl request; returns status, lower-case response headers and body."""
    name = uuid.uuid4().hex
    out, head = tmp_path / f"{name}.body", tmp_path / f"{name}.head"
    cmd = ["curl", "-sS", "-m", str(CURL_TIMEOUT), "-o", str(out), "-D", str(head), "-w", "%{http_code}", *args]
    if data is not None:
        cmd += ["--data-binary", f"@{data}"]
    run = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=CURL_TIMEOUT + 10)
    assert run.returncode == 0, f"curl failed: {run.stderr}"
    headers = {}
    for line in head.read_text(errors="replace").splitlines()[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return int(run.stdout), headers, out.read_bytes()


def stow(nectar, tmp_path: Path, parts: list[bytes], path: str = "/dicomweb/studies",
         content_type: str | None = None, extra: tuple = (), part_type: str = "application/dicom",
         content_length: bool = False):
    """POST `parts` as multipart/related; returns status and the JSON body."""
    boundary = "nectar-test-" + uuid.uuid4().hex
    body = tmp_path / f"stow-{uuid.uuid4().hex}.bin"
    body.write_bytes(multipart_body(parts, boundary, part_type, content_length))
    content_type = content_type or f'{DICOM_RELATED}; boundary="{boundary}"'
    content_type = content_type.replace("{boundary}", boundary)
    status, _, response = curl(nectar.url(path), tmp_path, "-H", f"Content-Type: {content_type}", *extra, data=body)
    body.unlink()
    return status, json.loads(response) if response else {}


def split_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Splits a multipart body into (headers, content) pairs."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:])
    boundary = params["boundary"].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if line)
        parts.append(({k.lower(): v for k, v in headers.items()}, content[:-2]))
    return parts


def items(response: dict, tag: str) -> list[dict]:
    return response.get(tag, {}).get("Value", [])


def referenced_uids(response: dict) -> list[str]:
    return [item["00081155"]["Value"][0] for item in items(response, "00081199")]


def failure_reasons(response: dict) -> list[int]:
    return [item["00081197"]["Value"][0] for item in items(response, "00081198")]


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def has_study_and_series(path: Path) -> bool:
    """Whether the data set before Pixel Data has Study and Series Instance UIDs
    (corpus.CorpusFile.has_study_series is false for files pydicom cannot read
    to the end, such as a truncated Pixel Data)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return False
    return bool(ds.get("StudyInstanceUID")) and bool(ds.get("SeriesInstanceUID"))


def instance_path(study: str, series: str, instance: str) -> str:
    return f"/dicomweb/studies/{study}/series/{series}/instances/{instance}"


def client(nectar) -> DICOMwebClient:
    return DICOMwebClient(nectar.url("/dicomweb"), timeout=60)


def store_files(nectar, tmp_path, rels: list[str]) -> list[tuple[str, str, str]]:
    paths = [corpus.path(rel) for rel in rels]
    status, response = stow(nectar, tmp_path, [p.read_bytes() for p in paths])
    assert status == 200, response
    return [uids(p) for p in paths]


# ----------------------------------------------------------------------------- corpus


def test_corpus_stow_then_wado(nectar, corpus_files, tmp_path):
    files = [f for f in corpus_files if f.has_meta]
    assert len(files) >= 200, f"only {len(files)} Part 10 corpus files: corpus incomplete?"

    # Several corpus files share a SOP Instance UID; the copy stored last is the one served.
    stored: dict[str, corpus.CorpusFile] = {}
    stored_files = 0
    unexpected = []
    for f in files:
        status, response = stow(nectar, tmp_path, [f.path.read_bytes()])
        if has_study_and_series(f.path) and status == 200:
            uid = uids(f.path)[2]
            assert referenced_uids(response) == [uid], f.rel
            stored[uid] = f
            stored_files += 1
        elif not has_study_and_series(f.path):
            # A File Meta without Transfer Syntax UID, or an uncompressed data set
            # of odd length, makes the part unreadable before the missing
            # attributes are noticed.
            meta = pydicom.dcmread(f.path, stop_before_pixels=True, force=True).file_meta
            odd = (f.path.stat().st_size - f.dataset_offset) % 2 == 1 and f.transfer_syntax != corpus.DEFLATED_LE
            readable = bool(meta.get("TransferSyntaxUID")) and not odd
            expected = DATA_SET_DOES_NOT_MATCH_SOP_CLASS if readable else CANNOT_UNDERSTAND
            assert status == 409, f"{f.rel}: {status} {response}"
            assert failure_reasons(response) == [expected], f.rel
        elif f.rel in corpus.DCMTK_UNREADABLE and status == 409:
            # Damaged files (truncated values, broken sequences) may be refused.
            assert failure_reasons(response) == [CANNOT_UNDERSTAND], f.rel
        else:
            unexpected.append((f.rel, status, failure_reasons(response)))
    assert not unexpected, f"corpus files with Study and Series UIDs not stored: {unexpected}"
    assert stored_files >= 200
    assert len(stored) >= 130

    web = client(nectar)
    metadata_failures = []
    for uid, f in stored.items():
        study, series, _ = uids(f.path)
        status, headers, body = curl(nectar.url(instance_path(study, series, uid)), tmp_path)
        assert status == 200, f.rel
        parts = split_multipart(headers["content-type"], body)
        assert len(parts) == 1, f.rel
        assert parts[0][1] == f.path.read_bytes(), f"{f.rel}: retrieved bytes differ from the file sent"
        assert f"transfer-syntax={f.transfer_syntax}" in parts[0][0]["content-type"], f.rel

        if f.rel in corpus.DCMTK_UNREADABLE:
            # dicom-object cannot parse these damaged files either, so their
            # metadata request fails with 500 and the reason.
            continue
        try:
            metadata = web.retrieve_instance_metadata(study, series, uid)
        except Exception as error:
            metadata_failures.append((f.rel, str(error)))
            continue
        assert metadata["00080018"].get("Value") == [uid], f.rel
        assert metadata["0020000D"].get("Value") == [study], (f.rel, metadata["0020000D"])
        if "7FE00010" in metadata:
            assert metadata["7FE00010"]["BulkDataURI"].endswith(f"{instance_path(study, series, uid)}/bulkdata/7FE00010")
    assert metadata_failures == []


def test_client_retrieves_study_series_and_instance(nectar, tmp_path):
    rels = ["pydicom/CT_small.dcm", "pydicom/MR_small.dcm", "pydicom_data/emri_small.dcm"]
    stored = store_files(nectar, tmp_path, rels)
    web = client(nectar)
    for (study, series, uid), rel in zip(stored, rels):
        original = pydicom.dcmread(corpus.path(rel))
        instance = web.retrieve_instance(study, series, uid)
        assert instance.SOPInstanceUID == uid
        assert instance.PixelData == original.PixelData, rel
        assert [ds.SOPInstanceUID for ds in web.retrieve_series(study, series)] == [uid]
        assert uid in [ds.SOPInstanceUID for ds in web.retrieve_study(study)]
        assert [m["00080018"]["Value"][0] for m in web.retrieve_series_metadata(study, series)] == [uid]
        assert uid in [m["00080018"]["Value"][0] for m in web.retrieve_study_metadata(study)]


def test_metadata_json_and_bulk_data(nectar, tmp_path):
    rel = "pydicom/CT_small.dcm"
    (study, series, uid), = store_files(nectar, tmp_path, [rel])
    original = pydicom.dcmread(corpus.path(rel))
    web = client(nectar)
    metadata = web.retrieve_instance_metadata(study, series, uid)

    assert metadata["00100010"]["vr"] == "PN"
    assert metadata["00100010"]["Value"] == [{"Alphabetic": str(original.PatientName)}]
    assert metadata["00200013"]["Value"] == [int(original.InstanceNumber)]
    assert metadata["00280030"]["Value"] == [float(v) for v in original.PixelSpacing]
    assert metadata["00080050"] == {"vr": "SH"}, "empty Accession Number has no Value"
    assert "Value" not in metadata["7FE00010"]
    # dicomweb-client 0.61.2 sends its GET requests with `Host: 127.0.0.1`,
    # without the port, and nectar builds absolute URIs from the Host header,
    # so only the path of this URI is checked.
    bulk_path = f"{instance_path(study, series, uid)}/bulkdata/7FE00010"
    assert metadata["7FE00010"]["BulkDataURI"].endswith(bulk_path)

    # curl sends Host with the port, so the URI can be followed as it is.
    status, _, body = curl(nectar.url(instance_path(study, series, uid) + "/metadata"), tmp_path)
    assert status == 200
    uri = json.loads(body)[0]["7FE00010"]["BulkDataURI"]
    assert uri == nectar.url(bulk_path)
    assert web.retrieve_bulkdata(uri) == [original.PixelData]


TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


def text_mismatches(metadata: dict, ds: pydicom.Dataset) -> list[str]:
    """Top-level text and PN attributes whose JSON value differs from pydicom's decoding."""
    mismatches = []
    for element in ds:
        key = f"{element.tag:08X}"
        if element.VR not in TEXT_VRS | {"PN"} or element.is_empty:
            continue
        values = element.value if element.VM > 1 else [element.value]
        if element.VR == "PN":
            expected = [{k: v for k, v in (("Alphabetic", n.alphabetic), ("Ideographic", n.ideographic),
                                           ("Phonetic", n.phonetic)) if v} or None for n in values]
        elif element.VR in {"LT", "ST", "UT", "UR"}:
            expected = [str(element.value).rstrip(" \0")]
        else:
            expected = [str(v).strip(" \0") or None for v in values]
        got = metadata.get(key, {}).get("Value")
        if got != expected:
            mismatches.append(f"{key} {element.VR}: {got!r} != {expected!r}")
    return mismatches


def test_metadata_text_matches_pydicom(nectar, tmp_path):
    cases = {"pydicom/SC_rgb_gdcm_KY.dcm": "ISO_IR 192", "pydicom/CT_small.dcm": "ISO_IR 100"}
    for rel, charset in cases.items():
        original = pydicom.dcmread(corpus.path(rel))
        (study, series, uid), = store_files(nectar, tmp_path, [rel])
        metadata = client(nectar).retrieve_instance_metadata(study, series, uid)
        assert metadata["00080005"]["Value"] == [charset], rel
        assert text_mismatches(metadata, original) == [], rel


# ----------------------------------------------------------------------------- C-STORE then WADO-RS


def test_cstore_instance_retrieved_over_wado(nectar, tmp_path):
    f = corpus.get("pydicom/CT_small.dcm")
    run = storescu(nectar.dimse_port, [f.path], f.storescu_option)
    assert run.succeeded() == [str(f.path)], run.output
    study, series, uid = uids(f.path)

    status, headers, body = curl(nectar.url(instance_path(study, series, uid)), tmp_path)
    assert status == 200
    (part_headers, part), = split_multipart(headers["content-type"], body)
    assert part[128:132] == b"DICM"
    # nectar writes its own File Meta for C-STORE, and storescu re-encodes the
    # data set it sends (it drops group lengths and trailing padding), so the
    # data set is compared element by element.
    retrieved = tmp_path / "retrieved.dcm"
    retrieved.write_bytes(part)
    assert diff(read_any(retrieved), read_any(f.path)) == []
    assert pydicom.dcmread(retrieved).file_meta.SourceApplicationEntityTitle == "STORESCU"
    assert client(nectar).retrieve_instance(study, series, uid).SOPInstanceUID == uid


# ----------------------------------------------------------------------------- frames


def test_frames_uncompressed(nectar, tmp_path):
    rels = ["pydicom_data/emri_small.dcm", "pydicom_data/emri_small_big_endian.dcm"]
    stored = store_files(nectar, tmp_path, rels)
    original = pydicom.dcmread(corpus.path(rels[0]))
    frame_len = original.Rows * original.Columns * original.BitsAllocated // 8
    expected = [original.PixelData[i * frame_len:(i + 1) * frame_len] for i in range(original.NumberOfFrames)]
    web = client(nectar)
    for (study, series, uid), rel in zip(stored, rels):
        frames = web.retrieve_instance_frames(study, series, uid, [1, 3, 10],
                                              media_types=(("application/octet-stream", "*"),))
        # Big endian pixel data is served in little-endian order, equal to the LE file.
        assert frames == [expected[0], expected[2], expected[9]], rel


def test_frames_encapsulated(nectar, tmp_path):
    cases = {
        "pydicom_data/emri_small_jpeg_2k_lossless.dcm": "image/jp2",
        "pydicom/examples_ybr_color.dcm": "image/jpeg",
    }
    for rel, media_type in cases.items():
        (study, series, uid), = store_files(nectar, tmp_path, [rel])
        original = pydicom.dcmread(corpus.path(rel))
        ts = str(original.file_meta.TransferSyntaxUID)
        expected = list(generate_frames(original.PixelData, number_of_frames=original.NumberOfFrames))
        status, headers, body = curl(
            nectar.url(instance_path(study, series, uid) + "/frames/2,1"), tmp_path,
            "-H", f'Accept: multipart/related; type="{media_type}"; transfer-syntax={ts}')
        assert status == 200, body
        assert f'type="{media_type}"' in headers["content-type"]
        parts = split_multipart(headers["content-type"], body)
        assert [content for _, content in parts] == [expected[1], expected[0]], rel
        assert parts[0][0]["content-type"] == f"{media_type}; transfer-syntax={ts}"

        frames = client(nectar).retrieve_instance_frames(study, series, uid, [len(expected)],
                                                          media_types=((media_type, ts),))
        assert frames == [expected[-1]], rel


# ----------------------------------------------------------------------------- status codes


def test_stow_status_codes(nectar, tmp_path):
    ct = corpus.path("pydicom/CT_small.dcm").read_bytes()
    mr = corpus.path("pydicom/MR_small.dcm").read_bytes()
    no_study = next(f for f in corpus.classify() if f.has_meta and not f.has_study_series).path.read_bytes()
    ct_study = uids(corpus.path("pydicom/CT_small.dcm"))[0]

    status, response = stow(nectar, tmp_path, [ct, no_study])
    assert status == 202
    assert len(referenced_uids(response)) == 1
    assert failure_reasons(response) == [DATA_SET_DOES_NOT_MATCH_SOP_CLASS]

    status, response = stow(nectar, tmp_path, [no_study])
    assert status == 409
    assert failure_reasons(response) == [DATA_SET_DOES_NOT_MATCH_SOP_CLASS]

    meta_end = corpus.get("pydicom/CT_small.dcm").dataset_offset
    assert ct[:meta_end].count(b"1.2.840.10008.1.2.1\0") == 1
    unknown_syntax = ct[:meta_end].replace(b"1.2.840.10008.1.2.1\0", b"1.2.3.4.5.6.7.8.9.10") + ct[meta_end:]
    status, response = stow(nectar, tmp_path, [unknown_syntax])
    assert status == 409
    assert failure_reasons(response) == [TRANSFER_SYNTAX_NOT_SUPPORTED]

    status, response = stow(nectar, tmp_path, [b"not a DICOM file"])
    assert status == 409
    assert failure_reasons(response) == [CANNOT_UNDERSTAND]

    status, response = stow(nectar, tmp_path, [ct], part_type="image/jpeg",
                            content_type="multipart/related; boundary={boundary}")
    assert status == 409
    assert failure_reasons(response) == [UNSUPPORTED_MEDIA_TYPE]

    status, response = stow(nectar, tmp_path, [mr], path=f"/dicomweb/studies/{ct_study}")
    assert status == 409
    assert failure_reasons(response) == [STUDY_INSTANCE_UID_MISMATCH]
    assert response["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{ct_study}")

    status, response = stow(nectar, tmp_path, [ct], path=f"/dicomweb/studies/{ct_study}")
    assert status == 200
    assert referenced_uids(response) == [uids(corpus.path("pydicom/CT_small.dcm"))[2]]


def test_stow_rejected_requests(nectar, tmp_path):
    ct = corpus.path("pydicom/CT_small.dcm").read_bytes()
    status, response = stow(nectar, tmp_path, [ct], content_type="application/dicom")
    assert status == 415, response
    status, response = stow(nectar, tmp_path, [ct],
                            content_type='multipart/related; type="application/dicom+json"; boundary={boundary}')
    assert status == 415, response
    status, response = stow(nectar, tmp_path, [ct], content_type=DICOM_RELATED)
    assert status == 400, response
    assert "boundary" in response["error"]
    status, response = stow(nectar, tmp_path, [ct], content_type=f"{DICOM_RELATED}; boundary=not-in-the-body")
    assert status == 400, response


def test_stow_content_type_forms_and_chunked(nectar, tmp_path):
    forms = [
        '{related}; boundary="{{boundary}}"',
        "multipart/related;boundary={{boundary}};type=application/dicom",
        "Multipart/Related; boundary={{boundary}}; type=\"application/dicom\"",
    ]
    ct = corpus.path("pydicom/CT_small.dcm").read_bytes()
    for form in forms:
        content_type = form.format(related=DICOM_RELATED)
        status, response = stow(nectar, tmp_path, [ct], content_type=content_type)
        assert status == 200, (content_type, response)

    mr = corpus.path("pydicom/MR_small.dcm").read_bytes()
    status, response = stow(nectar, tmp_path, [ct, mr], extra=("-H", "Transfer-Encoding: chunked"))
    assert status == 200, response
    assert len(referenced_uids(response)) == 2


def test_stow_parts_with_content_length(nectar, tmp_path):
    """Parts that state their length, one over 256 KiB, are stored and served back byte for byte."""
    files = [corpus.path("pydicom_data/MR2_UNCI.dcm"), corpus.path("pydicom/CT_small.dcm")]
    parts = [f.read_bytes() for f in files]
    assert len(parts[0]) > 256 * 1024
    for _ in range(2):
        status, response = stow(nectar, tmp_path, parts, content_length=True)
        assert status == 200, failure_reasons(response)
        assert referenced_uids(response) == [uids(f)[2] for f in files]
    for f, sent in zip(files, parts):
        status, headers, body = curl(nectar.url(instance_path(*uids(f))), tmp_path)
        assert status == 200
        (_, part), = split_multipart(headers["content-type"], body)
        assert part == sent, f.name


def test_wado_status_codes(nectar, tmp_path):
    (study, series, uid), = store_files(nectar, tmp_path, ["pydicom/CT_small.dcm"])
    for path in [f"/dicomweb/studies/1.2.3.999", f"/dicomweb/studies/{study}/series/1.2.3.999",
                 instance_path(study, series, "1.2.3.999"), "/dicomweb/studies/1.2.3.999/metadata"]:
        status, _, body = curl(nectar.url(path), tmp_path)
        assert status == 404, path
        assert "not found" in json.loads(body)["error"], path

    jpeg = 'Accept: multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    status, _, _ = curl(nectar.url(instance_path(study, series, uid)), tmp_path, "-H", jpeg)
    assert status == 406
    status, _, _ = curl(nectar.url(instance_path(study, series, uid) + "/frames/1"), tmp_path,
                        "-H", 'Accept: multipart/related; type="image/jpeg"')
    assert status == 406
    for accept in ['multipart/related; type="application/dicom"; transfer-syntax=*',
                   f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}',
                   "*/*"]:
        status, _, _ = curl(nectar.url(instance_path(study, series, uid)), tmp_path, "-H", f"Accept: {accept}")
        assert status == 200, accept
    status, _, _ = curl(nectar.url(instance_path(study, series, uid) + "/frames/2"), tmp_path)
    assert status == 404


def test_http_metrics_per_route(nectar, tmp_path):
    store_files(nectar, tmp_path, ["pydicom/CT_small.dcm"])
    curl(nectar.url("/dicomweb/studies/1.2.3.999"), tmp_path)
    status, text = nectar.http_get("/metrics")
    assert status == 200
    assert 'nectar_http_requests_total{route="/dicomweb/studies",method="POST",status="200"} 1' in text
    assert 'nectar_http_requests_total{route="/dicomweb/studies/{study}",method="GET",status="404"} 1' in text
    assert "nectar_http_received_bytes_total" in text
    assert "nectar_http_request_duration_seconds" in text


# ----------------------------------------------------------------------------- large bodies


LARGE_BODY_MIB = int(os.environ.get("NECTAR_DICOMWEB_LARGE_MIB", "512"))
FRAME_ROWS = FRAME_COLUMNS = 512
FRAME_LEN = FRAME_ROWS * FRAME_COLUMNS * 2


def large_instance_header(frames: int) -> tuple[bytes, tuple[str, str, str]]:
    """A Part 10 file up to and including the Pixel Data element header of
    `frames` 16-bit frames, and its Study, Series and SOP Instance UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = EXPLICIT_LE
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "LARGE"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = FRAME_ROWS, FRAME_COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * FRAME_LEN)
    return buffer.getvalue() + pixel_header, (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def frame_bytes(number: int) -> bytes:
    return bytes([number % 251 + 1]) * FRAME_LEN


def anonymous_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/{pid}/status")


def test_stow_large_chunked_body_streams(nectar, tmp_path):
    frames = LARGE_BODY_MIB * 1024 * 1024 // FRAME_LEN
    header, (study, series, uid) = large_instance_header(frames)
    boundary = uuid.uuid4().hex
    digest = hashlib.sha256(header)
    out = tmp_path / "stow-response.json"
    curl_cmd = ["curl", "-sS", "-m", str(CURL_TIMEOUT), "-X", "POST", "-T", "-", "-o", str(out), "-w", "%{http_code}",
                "-H", f"Content-Type: multipart/related; type=application/dicom; boundary={boundary}",
                "-H", "Transfer-Encoding: chunked", nectar.url("/dicomweb/studies")]
    peak_rss = 0.0
    with subprocess.Popen(curl_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False) as proc:
        proc.stdin.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + header)
        for number in range(1, frames + 1):
            frame = frame_bytes(number)
            digest.update(frame)
            proc.stdin.write(frame)
            if number % 128 == 0:
                peak_rss = max(peak_rss, anonymous_rss_mib(nectar.pid))
        proc.stdin.write(f"\r\n--{boundary}--\r\n".encode())
        proc.stdin.close()
        status = int(proc.stdout.read() or b"0")
        assert proc.wait(timeout=CURL_TIMEOUT) == 0
    assert status == 200, out.read_text()
    assert referenced_uids(json.loads(out.read_text())) == [uid]
    # The body is several hundred MiB; nectar holds only a chunk of it in its own memory.
    assert peak_rss < LARGE_BODY_MIB / 4, f"nectar used {peak_rss:.0f} MiB anonymous memory"

    retrieved = tmp_path / "retrieved.multipart"
    run = subprocess.run(["curl", "-sS", "-m", str(CURL_TIMEOUT), "-o", str(retrieved),
                          nectar.url(instance_path(study, series, uid))], timeout=CURL_TIMEOUT + 10)
    assert run.returncode == 0
    part_len = len(header) + frames * FRAME_LEN
    with retrieved.open("rb") as f:
        head = f.read(4096)
        start = head.index(b"\r\n\r\n") + 4
        assert f"Content-Length: {part_len}".encode() in head[:start]
        f.seek(start)
        received = hashlib.sha256()
        remaining = part_len
        while remaining:
            chunk = f.read(min(remaining, 1 << 20))
            assert chunk, "retrieved body ends early"
            received.update(chunk)
            remaining -= len(chunk)
    assert received.hexdigest() == digest.hexdigest()


def test_stow_many_parts_one_request(nectar, corpus_files, tmp_path):
    files = [f for f in corpus_files
             if f.has_meta and f.rel not in corpus.DCMTK_UNREADABLE and has_study_and_series(f.path)]
    assert len(files) > 150
    status, response = stow(nectar, tmp_path, [f.path.read_bytes() for f in files])
    assert status == 200, failure_reasons(response)
    assert referenced_uids(response) == [uids(f.path)[2] for f in files]

    # The copy stored last of each SOP Instance UID is the one served.
    last = {uids(f.path)[2]: f for f in files}
    for uid, f in list(last.items())[:40]:
        study, series, _ = uids(f.path)
        status, headers, body = curl(nectar.url(instance_path(study, series, uid)), tmp_path)
        assert status == 200, f.rel
        (_, part), = split_multipart(headers["content-type"], body)
        assert part == f.path.read_bytes(), f.rel
