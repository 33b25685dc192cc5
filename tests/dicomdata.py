"""Test instances and the pynetdicom SCU side.

Instances are written as Part 10 files and sent with pynetdicom's chunked-file mode
(STORE_SEND_CHUNKED_DATASET), which sends the file's data set bytes unchanged, so a
test knows the exact bytes nectar received and must store.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

import corpus

# Send files from disk byte for byte (no decode / re-encode).
_config.STORE_SEND_CHUNKED_DATASET = True


def _patch_pynetdicom_reactor_race() -> None:
    """pynetdicom 3.0.4's requestor can lose a response from a fast peer: send_*()
    pauses the reactor thread by clearing a checkpoint and then checks `_is_paused`,
    which is still True from the reactor's previous pause, so the reactor can run
    one more loop, take the response off the DIMSE queue, log "Received unexpected
    C-STORE service message" and drop it; send_*() then waits out the DIMSE
    timeout. Seen with 8 threads against nectar (answers in well under 1 ms). Put
    such a response back for the send_*() call that is waiting for it."""
    from pynetdicom.association import Association

    original = Association._serve_request
    if getattr(original, "_nectar_tests", False):
        return

    def _serve_request(self, msg, context_id):
        if msg is not None and not msg.is_valid_request and not self._reactor_checkpoint.is_set():
            self.dimse.msg_queue.put((context_id, msg))
            return None
        return original(self, msg, context_id)

    _serve_request._nectar_tests = True
    Association._serve_request = _serve_request


_patch_pynetdicom_reactor_race()

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
ROOT_UID = "1.2.826.0.1.3680043.9.7433.2."  # generate_uid prefix for test instances
TIMEOUT = 30


@dataclass(frozen=True)
class Instance:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str

    def dataset_bytes(self) -> bytes:
        return dataset_bytes(self.path)


def dataset_bytes(path: Path) -> bytes:
    """The data set bytes of a Part 10 file (everything after the File Meta)."""
    data = Path(path).read_bytes()
    offset = corpus.part10_dataset_offset(data)
    assert offset is not None, f"{path} is not a Part 10 file"
    return data[offset:]


def read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def tiny_dataset() -> pydicom.Dataset:
    """A small Secondary Capture data set without pixel data (a few hundred bytes)."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid(ROOT_UID)
    ds.PatientName = "TINY^TEST"
    ds.PatientID = "NECTAR-TINY"
    ds.StudyInstanceUID = generate_uid(ROOT_UID)
    ds.SeriesInstanceUID = generate_uid(ROOT_UID)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    return ds


def make_instances(out_dir: Path, count: int, template: str | None = "pydicom/CT_small.dcm",
                   transfer_syntax: str | None = None, tweak=None) -> list[Instance]:
    """`count` copies of a corpus file (template=None: tiny_dataset()) with fresh SOP
    Instance UIDs (and one fresh study/series), written as Part 10 files in its transfer syntax (or the given
    uncompressed one). tweak(ds, i) may edit each data set."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = read(corpus.path(template)) if template else tiny_dataset()
    ts = UID(transfer_syntax or base.file_meta.TransferSyntaxUID)
    study, series = generate_uid(ROOT_UID), generate_uid(ROOT_UID)
    out = []
    for i in range(count):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(ROOT_UID)
        ds.InstanceNumber = i + 1
        if tweak:
            tweak(ds, i)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.TransferSyntaxUID = ts
        path = out_dir / f"{i:05d}_{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, implicit_vr=ts.is_implicit_VR, little_endian=ts.is_little_endian,
                   enforce_file_format=True)
        out.append(Instance(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ts)))
    return out


def instance_of(path: Path) -> Instance:
    ds = read(path)
    return Instance(Path(path), str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                    str(ds.file_meta.TransferSyntaxUID))


def scu(contexts: list[tuple[str, list[str]]], calling: str = "PYNETDICOM", timeout: float = TIMEOUT) -> AE:
    """A pynetdicom requestor with bounded timeouts."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = 10
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    return ae


def contexts_for(instances: list[Instance]) -> list[tuple[str, list[str]]]:
    pairs = sorted({(i.sop_class, i.transfer_syntax) for i in instances})
    return [(sc, [ts]) for sc, ts in pairs] + [(Verification, ["1.2.840.10008.1.2"])]


def associate(port: int, contexts: list[tuple[str, list[str]]], called: str = "NECTAR",
              calling: str = "PYNETDICOM", max_pdu: int = 16384, timeout: float = TIMEOUT):
    """(AE, Association); max_pdu is our maximum receive PDU (0: unlimited)."""
    ae = scu(contexts, calling=calling, timeout=timeout)
    assoc = ae.associate("127.0.0.1", port, ae_title=called, max_pdu=max_pdu)
    return ae, assoc


def send_all(port: int, instances: list[Instance], called: str = "NECTAR",
             statuses: dict[str, int] | None = None, **kw) -> dict[str, int]:
    """One association, every instance in order -> {SOP Instance UID: status}
    (-1: no response). Stops at the first lost association. Pass `statuses` to see
    results as they arrive (another thread may kill the server meanwhile)."""
    statuses = {} if statuses is None else statuses
    ae, assoc = associate(port, contexts_for(instances), called=called, **kw)
    try:
        if not assoc.is_established:
            raise AssertionError("association not established")
        for inst in instances:
            rsp = assoc.send_c_store(inst.path)
            statuses[inst.sop_instance] = int(rsp.Status) if "Status" in rsp else -1
            if not assoc.is_established:
                break
        if assoc.is_established:
            assoc.release()
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()
    return statuses


def encode(ds: pydicom.Dataset, transfer_syntax: str = EXPLICIT_LE) -> bytes:
    """A data set's bytes in an uncompressed transfer syntax, no File Meta."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ts = UID(transfer_syntax)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
    write_dataset(buf, ds)
    return buf.getvalue()


def stop_and_verify(nectar, instances: list[Instance], out_dir: Path, count: int | None = None,
                    exact: bool = True) -> dict[str, Path]:
    """Stop nectar (SIGTERM, exit 0); fsck must be clean with `count` instances
    (default: the distinct UIDs in `instances`); export must hold, for every UID, the
    last instance sent with it: same data set bytes, File Meta naming it.
    exact=False (after a crash): instances that were stored but whose response was
    lost may be there too, so fsck and export may count more than `instances`."""
    from nectar import assert_fsck_clean, export

    latest = {i.sop_instance: i for i in instances}
    assert nectar.stop() == 0, nectar.log_tail()
    expected = len(latest) if count is None else count
    report = assert_fsck_clean(nectar.data_dir, instances=expected if exact else None).report
    if not exact:
        assert report["instances"] >= expected, report
    files = export(nectar.data_dir, out_dir).files()
    missing = sorted(set(latest) - set(files))
    assert not missing, f"{len(missing)} acknowledged instances missing from export, e.g. {missing[:5]}"
    if exact:
        extra = sorted(set(files) - set(latest))
        assert len(files) == expected, f"export holds {len(files)} files, expected {expected}; extra: {extra[:5]}"
    assert report["instances"] == len(files), f"fsck counts {report['instances']}, export wrote {len(files)}"
    for uid, inst in latest.items():
        check_exported(files[uid], inst)
    return files


def check_exported(path: Path, inst: Instance) -> None:
    got = dataset_bytes(path)
    want = inst.dataset_bytes()
    assert got == want, f"{inst.sop_instance}: stored data set differs from the one sent ({len(got)} vs {len(want)} bytes)"
    meta = read(path).file_meta
    assert str(meta.MediaStorageSOPInstanceUID) == inst.sop_instance
    assert str(meta.MediaStorageSOPClassUID) == inst.sop_class
    assert str(meta.TransferSyntaxUID) == inst.transfer_syntax
