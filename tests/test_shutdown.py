"""Graceful shutdown: SIGTERM/SIGINT stop listening, let open associations finish
or abort them after --shutdown-timeout, flush, and exit 0."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from pynetdicom.sop_class import Verification

from dicomdata import associate, contexts_for, make_instances, stop_and_verify

SHUTDOWN_TIMEOUT = 3
MARGIN = 20  # deadline slack on a loaded 2-core machine; not a performance bound


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_aborts_idle_association(nectar_factory, sig):
    srv = nectar_factory("--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    ae, assoc = associate(srv.dimse_port, [(Verification, ["1.2.840.10008.1.2"])])
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        srv.signal(sig)
        rc = srv.wait(SHUTDOWN_TIMEOUT + MARGIN)
        assert rc is not None, f"still running {SHUTDOWN_TIMEOUT + MARGIN}s after {sig.name}\n{srv.log_tail()}"
        assert rc == 0, srv.log_tail()
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established, "the server exited but our association still looks open"
        assert refused(srv.dimse_port)
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()


def test_sigterm_lets_association_finish(nectar_factory, tmp_path):
    srv = nectar_factory("--shutdown-timeout", "30")
    first, second = make_instances(tmp_path / "ct", 2)
    ae, assoc = associate(srv.dimse_port, contexts_for([first, second]))
    try:
        assert assoc.is_established
        assert assoc.send_c_store(first.path).Status == 0x0000
        srv.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refused(srv.dimse_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused(srv.dimse_port), "still accepting connections 10 s after SIGTERM"
        assert srv.running, "exited although an association was still open"
        # the open association keeps working until it releases
        assert assoc.send_c_store(second.path).Status == 0x0000
        assoc.release()
        assert assoc.is_released
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()
    rc = srv.wait(30)
    assert rc == 0, f"exit {rc}\n{srv.log_tail()}"
    stop_and_verify(srv, [first, second], tmp_path / "export")
