"""The whole public corpus through dcmtk's storescu, checked against a reference SCP.

storescu re-encodes every data set it sends (it parses the file and writes the
data set again), so "the bytes it sent" are not always the file's bytes. The test
therefore sends the same files, in the same order, with the same options, first to
a pynetdicom reference SCP that records the data set bytes exactly as received,
then to nectar. nectar must store exactly those bytes. Every file is sent with the
storescu option that proposes its own transfer syntax (-xi, -xe, -xb, -xd, -xy,
-xx, -xs, -xt, -xu, -xv, -xw, -xr), so nothing is transcoded; files whose wire
bytes still differ from the file (dcmtk normalises some encodings, and re-deflates
Deflated data sets) are listed in the test output: with dcmtk 3.6.7 that is 64 of
the 213 sendable files, mostly group length elements and Data Set Trailing Padding
dropped; compared element by element with pydicom they still equal the originals.

nectar may refuse the four corpus files whose data set has no Study or Series
Instance UID (its manifest needs them); they are then left out of the checks.

Several corpus files share a SOP Instance UID (e.g. the MR_small variants); the
copy sent last must be the one exported ("newest copy wins").
"""

from __future__ import annotations

from collections import OrderedDict

import corpus
from compare import diff, read_any
from dicomdata import dataset_bytes, read
from nectar import assert_fsck_clean, export
from peers import RefStoreSCP, storescu


def _grouped(files):
    groups: OrderedDict[str, list] = OrderedDict()
    for f in files:
        groups.setdefault(f.storescu_option, []).append(f)
    return groups


def _send(port, groups):
    """storescu once per option group; -> ordered [(CorpusFile, status)]"""
    sent = []
    for option, files in groups.items():
        run = storescu(port, [f.path for f in files], option)
        for f in files:
            sent.append((f, run.status.get(str(f.path), "NotSent")))
        if run.returncode != 0:
            sent.append((None, f"storescu {option} exit {run.returncode}: {run.output[-3000:]}"))
    return sent


def test_storescu_corpus(nectar, corpus_files, tmp_path, capsys):
    files = [f for f in corpus_files if f.sendable]
    assert len(files) >= 200, f"only {len(files)} sendable corpus files: corpus incomplete?"
    groups = _grouped(files)

    with RefStoreSCP([f.sop_class_uid for f in files], list(corpus.STORESCU_TS_OPTION)) as ref:
        ref_sent = _send(ref.port, groups)
        received = list(ref.received)
    bad_ref = [(f.rel if f else "-", s) for f, s in ref_sent if s != "Success"]
    assert not bad_ref, f"storescu could not send these to the reference SCP (corpus.py misclassifies them): {bad_ref}"
    assert len(received) == len(files)

    nectar_sent = _send(nectar.dimse_port, groups)
    # nectar's manifest groups by study and series: it may refuse a data set without
    # Study/Series Instance UID (0xA9xx, "Error: DataSetDoesNotMatchSOPClass" in
    # storescu's words). Every other file must be stored.
    refused = {f.rel for f, s in nectar_sent
               if f is not None and not f.has_study_series and s.startswith("Error: DataSetDoesNotMatchSOPClass")}
    bad = [(f.rel if f else "-", s) for f, s in nectar_sent if s != "Success" and (f is None or f.rel not in refused)]
    assert not bad, f"nectar did not answer Success for {len(bad)} files: {bad[:20]}"

    # i-th file sent <-> i-th data set the reference SCP received
    wire = []
    converted = []
    for (f, _), rec in zip(ref_sent, received):
        assert rec.sop_instance == f.sop_instance_uid, (f.rel, rec.sop_instance)
        wire.append((f, rec))
        if rec.transfer_syntax != f.transfer_syntax:
            converted.append(f"{f.rel}: transfer syntax {f.transfer_syntax} -> {rec.transfer_syntax}")
        elif rec.dataset != f.dataset_bytes():
            converted.append(f"{f.rel}: re-encoded by storescu ({len(f.dataset_bytes())} -> {len(rec.dataset)} bytes)")
    with capsys.disabled():
        print(f"\nstorescu sent {len(files)} files as stored except {len(converted)} it re-encoded:")
        for line in converted:
            print("  " + line)

    with capsys.disabled():
        print(f"nectar refused {len(refused)} without Study/Series Instance UID: {sorted(refused)}")
    latest = OrderedDict()
    for f, rec in wire:
        if f.rel in refused:
            continue
        latest.pop(rec.sop_instance, None)
        latest[rec.sop_instance] = (f, rec)

    assert nectar.stop() == 0, nectar.log_tail()
    assert_fsck_clean(nectar.data_dir, instances=len(latest))
    exp = export(nectar.data_dir, tmp_path / "export")
    exported = exp.files()
    assert sorted(exported) == sorted(latest), (
        f"export differs: missing {sorted(set(latest) - set(exported))[:10]}, "
        f"extra {sorted(set(exported) - set(latest))[:10]}")
    assert str(len(latest)) in exp.stdout, f"export should print the count {len(latest)}: {exp.stdout!r}"

    problems = []
    for uid, (f, rec) in latest.items():
        path = exported[uid]
        ds = read(path)
        meta = ds.file_meta
        if str(meta.TransferSyntaxUID) != rec.transfer_syntax:
            problems.append(f"{f.rel}: stored TS {meta.TransferSyntaxUID}, negotiated {rec.transfer_syntax}")
        if str(meta.MediaStorageSOPInstanceUID) != uid or str(meta.MediaStorageSOPClassUID) != rec.sop_class:
            problems.append(f"{f.rel}: File Meta names {meta.MediaStorageSOPClassUID} / {meta.MediaStorageSOPInstanceUID}")
        stored = dataset_bytes(path)
        if stored != rec.dataset:
            problems.append(f"{f.rel}: stored data set ({len(stored)} bytes) differs from the "
                            f"received one ({len(rec.dataset)} bytes)")
            continue
        if rec.transfer_syntax == f.transfer_syntax and rec.dataset == f.dataset_bytes():
            assert stored == f.dataset_bytes()
        # element by element against the original file
        src = read_any(f.path)
        d = diff(src, ds)
        if d:
            problems.append(f"{f.rel}: differs from the original: {d[:5]}")
    assert not problems, "\n".join(problems[:40])
