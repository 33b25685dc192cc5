"""A full disk: C-STORE fails with 0xA700 (out of resources) and nothing
acknowledged is lost or served half-written."""

import subprocess

import pytest

from dicomdata import make_instances, send_all, stop_and_verify

SEGMENTS_DISK_MIB = 4
OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def data_dir_with_small_segments_disk(tmp_path):
    """A data dir whose segments/ folder is a 4 MiB tmpfs; the manifest stays on the big disk."""
    data_dir = tmp_path / "data"
    segments = data_dir / "segments"
    segments.mkdir(parents=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SEGMENTS_DISK_MIB}m", "tmpfs", str(segments)],
        capture_output=True, text=True, timeout=30)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        yield data_dir
    finally:
        subprocess.run(["umount", "-l", str(segments)], capture_output=True, timeout=30)


def test_disk_full_out_of_resources(nectar_factory, data_dir_with_small_segments_disk, tmp_path):
    srv = nectar_factory("--segment-size-mib", "1", data_dir=data_dir_with_small_segments_disk)
    # 200 CT_small copies are about 7.8 MB, twice what the segments disk holds.
    instances = make_instances(tmp_path / "instances", 200)
    statuses = send_all(srv.dimse_port, instances)

    assert len(statuses) == len(instances), "the association outlives the failures"
    stored = [i for i in instances if statuses[i.sop_instance] == 0]
    rejected = [i for i in instances if statuses[i.sop_instance] == OUT_OF_RESOURCES]
    assert stored, "some instances fit before the disk filled"
    assert rejected, "the full disk is reported as 0xA700"
    others = {hex(s) for s in statuses.values() if s not in (0, OUT_OF_RESOURCES)}
    assert not others, f"unexpected statuses {others}"
    assert srv.metrics().get("nectar_store_failures_total", 0) >= len(rejected)

    # Every acknowledged instance is intact, and nothing else is indexed.
    stop_and_verify(srv, stored, tmp_path / "export")
