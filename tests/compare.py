"""Comparing data sets element by element with pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset


def read_any(path: Path) -> Dataset:
    """A Part 10 file, or a bare data set (transfer syntax guessed by pydicom)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _value(elem):
    v = elem.value
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    return v


def diff(a: Dataset, b: Dataset, path: str = "") -> list[str]:
    """Differences between two data sets, ignoring group length elements (gggg,0000),
    Data Set Trailing Padding (FFFC,FFFC) -- dcmtk drops both when it re-encodes --
    and the File Meta. Sequences are compared item by item."""
    out: list[str] = []
    tags = sorted({t for t in a.keys() if t.element != 0} | {t for t in b.keys() if t.element != 0})
    for tag in tags:
        if tag.group == 0x0002 or tag == 0xFFFCFFFC:
            continue
        where = f"{path}{tag}"
        if tag not in a or tag not in b:
            out.append(f"{where} only in {'first' if tag in a else 'second'}")
            continue
        ea, eb = a[tag], b[tag]
        if ea.VR == "SQ" or eb.VR == "SQ":
            ia, ib = list(ea.value or []), list(eb.value or [])
            if len(ia) != len(ib):
                out.append(f"{where} has {len(ia)} vs {len(ib)} items")
                continue
            for n, (x, y) in enumerate(zip(ia, ib)):
                out += diff(x, y, f"{where}[{n}].")
            continue
        try:
            same = _value(ea) == _value(eb)
        except Exception as e:  # noqa: BLE001 - undecodable values compare as raw
            same = False
            out.append(f"{where} value comparison failed: {e}")
            continue
        if not same:
            out.append(f"{where} {ea.VR}: {str(ea.value)[:60]!r} != {str(eb.value)[:60]!r}")
    return out
