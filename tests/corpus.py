"""The public DICOM test corpus: fetch, verify, unpack, list and classify.

The corpus is the test data shipped inside two PyPI wheels, pinned by SHA-256 in
tests/corpus.sha256:

* pydicom 3.0.2      -> pydicom/data/test_files/**  (unpacked to files/pydicom/)
* pydicom-data 1.0.0 -> data_store/data/**          (unpacked to files/pydicom_data/)

`python3 tests/corpus.py fetch` downloads the wheels with `pip download --no-deps`
into tests/.corpus/wheels (git-ignored), checks every pin before unpacking anything,
and unpacks into tests/.corpus/files. It is a no-op when the unpacked tree already
matches the pins.

`classify()` tells, for every file, whether dcmtk's storescu (3.6.7, Debian 12) can
send it *as stored*, and if not, why. storescu refuses files whose data set lacks
SOP Class UID or SOP Instance UID, cannot parse some damaged files, and only sends a
compressed transfer syntax when told to propose it (one `-x?` option per run), so
every sendable file also carries the storescu option that proposes its own
transfer syntax. Files without File Meta Information are read by storescu as a bare
data set with the transfer syntax guessed from the first bytes; we guess the same
way (see _guess_bare_ts) so they are sent unconverted.

`python3 tests/corpus.py list` prints the classification.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINS = HERE / "corpus.sha256"
CORPUS = Path(os.environ.get("NECTAR_CORPUS_DIR", HERE / ".corpus"))
WHEELS = CORPUS / "wheels"
FILES = CORPUS / "files"
STAMP = FILES / ".pins"

# wheel member prefix -> folder under FILES
MEMBERS = {
    "pydicom/data/test_files/": "pydicom",
    "data_store/data/": "pydicom_data",
}

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

# transfer syntax -> storescu option that proposes it first (and all uncompressed
# syntaxes as a fallback context). With `-R` storescu then proposes only the SOP
# classes of the files given.
STORESCU_TS_OPTION = {
    IMPLICIT_LE: "-xi",
    EXPLICIT_LE: "-xe",
    EXPLICIT_BE: "-xb",
    DEFLATED_LE: "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG Lossless, SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE Lossless
    "1.2.840.10008.1.2.4.100": "-xm",  # MPEG2 MP@ML
    "1.2.840.10008.1.2.4.101": "-xh",  # MPEG2 MP@HL
    "1.2.840.10008.1.2.4.102": "-xn",  # MPEG-4 AVC/H.264 HP@4.1
    "1.2.840.10008.1.2.4.103": "-xl",  # MPEG-4 AVC/H.264 BD
    "1.2.840.10008.1.2.4.104": "-x2",
    "1.2.840.10008.1.2.4.105": "-x3",
    "1.2.840.10008.1.2.4.106": "-xo",
    "1.2.840.10008.1.2.4.107": "-x4",  # HEVC Main
    "1.2.840.10008.1.2.4.108": "-x5",  # HEVC Main 10
}

# Files that carry SOP Class and Instance UIDs but that dcmtk 3.6.7's parser
# cannot load, so storescu skips them ("missing SOP class (or instance)").
# Measured with storescu 3.6.7-9~deb12u4; reasons are dcmtk's own messages.
DCMTK_UNREADABLE = {
    "pydicom/MR_truncated.dcm": "PixelData larger than remaining bytes in file",
    "pydicom/rtplan_truncated.dcm": "IsocenterPosition larger than remaining bytes (truncated)",
    "pydicom/SC_rgb_jpeg.dcm": "non-standard VR '  ' in (0008,0008), parse derails",
    "pydicom/rtdose_rle.dcm": "odd-length encapsulated PixelData, dcmtk drops the data set",
    "pydicom/rtdose_rle_1frame.dcm": "odd-length encapsulated PixelData, dcmtk drops the data set",
    "pydicom_data/explicit_VR-UN.dcm": "UN of undefined length read as implicit sequence, parse fails",
    "pydicom_data/emri_small_jpeg_2k_lossless_too_short.dcm": "sequence not terminated before end of file",
}

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    rel: str
    has_meta: bool
    # Transfer syntax of the data set: from the File Meta, or guessed for a bare data set.
    transfer_syntax: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    # The data set has non-empty Study and Series Instance UIDs (nectar's manifest
    # groups instances by them and refuses data sets without them).
    has_study_series: bool
    # Byte offset of the data set in the file (after preamble and File Meta).
    dataset_offset: int
    # None when storescu can send this file as stored; else why it cannot.
    skip_reason: str | None

    @property
    def sendable(self) -> bool:
        return self.skip_reason is None

    @property
    def storescu_option(self) -> str:
        return STORESCU_TS_OPTION[self.transfer_syntax]

    def dataset_bytes(self) -> bytes:
        return self.path.read_bytes()[self.dataset_offset :]


# ----------------------------------------------------------------------------- fetch


def read_pins() -> list[tuple[str, str]]:
    pins = []
    for line in PINS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split()
        pins.append((digest.lower(), name.lstrip("*")))
    return pins


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _requirement(wheel_name: str) -> str:
    dist, version = wheel_name.split("-")[:2]
    return f"{dist.replace('_', '-')}=={version}"


def fetch(verbose: bool = True) -> Path:
    """Make FILES hold the pinned corpus. Idempotent; raises on a pin mismatch."""
    pins = read_pins()
    stamp = "".join(f"{d}  {n}\n" for d, n in pins)
    if STAMP.is_file() and STAMP.read_text() == stamp:
        if verbose:
            print(f"corpus: up to date in {FILES}")
        return FILES
    WHEELS.mkdir(parents=True, exist_ok=True)
    for digest, name in pins:
        whl = WHEELS / name
        if not whl.is_file() or _sha256(whl) != digest:
            if whl.exists():
                whl.unlink()
            if verbose:
                print(f"corpus: pip download {_requirement(name)}")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "-q", "-d", str(WHEELS), _requirement(name)],
                check=True, timeout=600,
            )
        got = _sha256(whl) if whl.is_file() else "(missing)"
        if got != digest:
            raise SystemExit(f"corpus: SHA-256 mismatch for {name}: got {got}, pinned {digest}")
    if FILES.exists():
        shutil.rmtree(FILES)
    FILES.mkdir(parents=True)
    count = 0
    for _, name in pins:
        with zipfile.ZipFile(WHEELS / name) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                for prefix, folder in MEMBERS.items():
                    if info.filename.startswith(prefix):
                        out = FILES / folder / info.filename[len(prefix) :]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(z.read(info))
                        count += 1
    STAMP.write_text(stamp)
    if verbose:
        print(f"corpus: unpacked {count} files into {FILES}")
    return FILES


# -------------------------------------------------------------------------- classify

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def part10_dataset_offset(data: bytes) -> int | None:
    """Offset of the data set in a Part 10 file, walking the (0002,xxxx) group
    element by element (some files lack or misstate the group length). None when
    the file has no preamble + 'DICM'."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(data):
        group, _elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return pos


def _guess_bare_ts(data: bytes) -> str:
    """Transfer syntax of a data set without File Meta, guessed as dcmtk does:
    byte order from the first group number, explicit VR if bytes 4-5 look like a VR."""
    big = data[0] == 0 and data[1] != 0
    explicit = len(data) >= 6 and data[4:6].isalpha() and data[4:6].isupper()
    if big:
        return EXPLICIT_BE
    return EXPLICIT_LE if explicit else IMPLICIT_LE


def _classify_one(path: Path) -> CorpusFile:
    import pydicom
    from pydicom.errors import InvalidDicomError

    # the corpus has deliberately odd values; reading them is not what is tested
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

    rel = path.relative_to(FILES).as_posix()
    data = path.read_bytes()
    offset = part10_dataset_offset(data)
    has_meta = offset is not None
    ts = sop_class = sop_inst = None
    has_study_series = False
    reason = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=not has_meta)
        meta = getattr(ds, "file_meta", None) or {}
        if has_meta:
            ts = str(meta.TransferSyntaxUID) if "TransferSyntaxUID" in meta else None
        else:
            ts = _guess_bare_ts(data)
        sop_class = str(ds.SOPClassUID) if "SOPClassUID" in ds else None
        sop_inst = str(ds.SOPInstanceUID) if "SOPInstanceUID" in ds else None
        has_study_series = all(str(ds.get(k, "") or "").strip("\x00 ") for k in ("StudyInstanceUID", "SeriesInstanceUID"))
        media_class = str(meta.MediaStorageSOPClassUID) if "MediaStorageSOPClassUID" in meta else None
        if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            reason = "DICOMDIR: not a storage SOP instance"
        elif not has_meta and len(ds) == 0:
            reason = "not a DICOM file"
    except (InvalidDicomError, Exception) as e:  # noqa: BLE001 - anything pydicom cannot read is skipped
        reason = f"pydicom cannot read it: {type(e).__name__}"
    if reason is None:
        if not sop_class or not sop_inst:
            reason = "no SOP Class/Instance UID in the data set: storescu refuses it"
        elif rel in DCMTK_UNREADABLE:
            reason = f"dcmtk cannot parse it: {DCMTK_UNREADABLE[rel]}"
        elif ts is None:
            reason = "File Meta without Transfer Syntax UID"
        elif ts not in STORESCU_TS_OPTION:
            reason = f"storescu has no option to propose transfer syntax {ts}"
    return CorpusFile(
        path=path,
        rel=rel,
        has_meta=has_meta,
        transfer_syntax=ts,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_inst,
        has_study_series=has_study_series,
        dataset_offset=offset if has_meta else 0,
        skip_reason=reason,
    )


@functools.lru_cache(maxsize=1)
def classify() -> tuple[CorpusFile, ...]:
    """Every corpus file, sorted by path, with its classification."""
    if not STAMP.is_file():
        raise FileNotFoundError(f"corpus not fetched: run `python3 {HERE / 'corpus.py'} fetch`")
    paths = sorted(p for p in FILES.rglob("*") if p.is_file() and p != STAMP)
    return tuple(_classify_one(p) for p in paths)


def all_files() -> list[Path]:
    return [f.path for f in classify()]


def dcmtk_sendable() -> list[CorpusFile]:
    return [f for f in classify() if f.sendable]


def get(rel: str) -> CorpusFile:
    """A corpus file by its path under FILES, e.g. 'pydicom/CT_small.dcm'."""
    for f in classify():
        if f.rel == rel:
            return f
    raise KeyError(rel)


def path(rel: str) -> Path:
    return get(rel).path if STAMP.is_file() else FILES / rel


def _main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "fetch"
    if cmd == "fetch":
        fetch()
        return 0
    if cmd == "list":
        files = classify()
        for f in files:
            status = f"send {f.storescu_option}" if f.sendable else f"skip: {f.skip_reason}"
            if f.sendable and not f.has_study_series:
                status += " (no Study/Series Instance UID)"
            print(f"{f.rel:70s} meta={int(f.has_meta)} ts={f.transfer_syntax or '-':24s} {status}")
        n = sum(f.sendable for f in files)
        print(f"{len(files)} files, {n} sendable by storescu, {len(files) - n} skipped")
        return 0
    print(f"usage: {argv[0]} [fetch|list]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
