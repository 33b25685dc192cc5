"""bench/compare end to end: a short run of nectar beside dcmtk storescp and Orthanc.

The harness counts every instance each receiver stored (nectar through `nectar
fsck`), so a receiver that lost one, or a run that broke, shows as a failed run.
Only outcomes are checked here, never a timing.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import peers

REPO = Path(__file__).resolve().parent.parent
RECEIVERS = ("nectar", "storescp", "orthanc")


def test_compare_quick_run_stores_all(tmp_path):
    nectar = Path(os.environ.get("NECTAR_BIN", REPO / "target" / "release" / "nectar")).resolve()
    if not peers.loopback_only():
        # compare runs its receivers in a network namespace of its own, which needs
        # the same rights as the one tests/run makes.
        pytest.skip(peers.ALL_INTERFACE_PEERS)
    if not (nectar.parent / "nectar-load").exists():
        pytest.skip(f"nectar-load is not beside {nectar}; `cargo test --workspace --release` builds it")
    out = tmp_path / "results.md"

    result = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "compare"), "--quick",
            "--receivers", ",".join(RECEIVERS), "--workloads", "small-8",
            "--out", str(out), "--target-dir", str(nectar.parent.parent), "--tmp-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for receiver in RECEIVERS:
        row = re.search(rf"^\| {receiver} \| (\d+)/(\d+) \|", text, re.MULTILINE)
        assert row is not None, f"no small-8 row for {receiver}:\n{text}"
        ok, runs = row.groups()
        assert runs == "1", f"{receiver} ran {runs} times in a one-round run:\n{text}"
        assert ok == runs, f"{receiver} run failed:\n{text}"
    assert "## Failed runs\n\nNone." in text, text
    assert "| small-8 instances/s against Orthanc |" in text, text
