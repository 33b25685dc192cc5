"""Events: ImageStoredEvent, DicomAvailableEvent and StudyRevisionEvent, read by
an independent NATS JetStream subscriber (nats-py against a real
`nats-server -js`) and from nectar's own `/events` stream.

Studies are made from pydicom's CT_small.dcm with fresh UIDs and sent with dcmtk
storescu; the quiet period is 2 s so revisions come quickly.
"""

from __future__ import annotations

import collections

import pytest

from dicomdata import make_instances
from events import NatsServer, entries, read_sse, wait_for
from peers import storescu

QUIET = "2s"
REVISION_WAIT = 30.0


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def send(srv, instances) -> None:
    run = storescu(srv.dimse_port, [i.path for i in instances])
    assert len(run.succeeded()) == len(instances), run.output


def same_study(first):
    """A tweak for make_instances that puts new instances into `first`'s study and series."""
    from dicomdata import read
    ds = read(first.path)

    def tweak(new, _index):
        new.StudyInstanceUID, new.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    return tweak


def study_of(instance) -> str:
    from dicomdata import read
    return str(read(instance.path).StudyInstanceUID)


def revisions(events, study: str) -> list:
    return [e for e in events if e.type == "StudyRevisionEvent" and e.cloud["subject"] == study]


def check_instance_events(events, instances) -> None:
    """One ImageStoredEvent and one DicomAvailableEvent per instance, no more."""
    by_type = collections.Counter((e.type, e.cloud["subject"]) for e in events)
    for inst in instances:
        assert by_type[("ImageStoredEvent", inst.sop_instance)] == 1, inst.sop_instance
        assert by_type[("DicomAvailableEvent", inst.sop_instance)] == 1, inst.sop_instance
    stored = next(e for e in events if e.type == "ImageStoredEvent" and e.cloud["subject"] == instances[0].sop_instance)
    assert stored.cloud["specversion"] == "1.0"
    assert stored.data["image"]["transferSyntaxUID"] == instances[0].transfer_syntax
    assert stored.data["store"]["provider"] == "nectar"
    assert stored.data["store"]["externalUrl"].endswith(f"/instances/{instances[0].sop_instance}")
    attributes = stored.data["image"]["attributes"]
    assert attributes["00080018"] == {"vr": "UI", "Value": [instances[0].sop_instance]}
    assert attributes["00100010"]["vr"] == "PN"
    assert "Alphabetic" in attributes["00100010"]["Value"][0]
    assert "7FE00010" not in attributes, "attributes stop before Pixel Data"


def test_study_revisions_over_nats(nectar_factory, nats_server, tmp_path):
    srv = nectar_factory("--nats-url", nats_server.url, "--study-quiet-period", QUIET)
    first = make_instances(tmp_path / "first", 4)
    send(srv, first)
    study = study_of(first[0])

    events = wait_for(lambda: (ev := nats_server.stream_events()) and revisions(ev, study) and ev, REVISION_WAIT)
    assert events, srv.log_tail()
    check_instance_events(events, first)
    [rev1] = revisions(events, study)
    assert rev1.data["revision"] == 1
    assert sorted(rev1.data["changeSet"]["additions"]) == entries(first)
    assert rev1.data["changeSet"]["modifications"] == []
    assert rev1.data["changeSet"]["deletions"] == []
    assert rev1.data["study"]["studyInstanceUID"] == study
    [series] = rev1.data["study"]["series"]
    assert sorted(series["instances"]) == sorted(i.sop_instance for i in first)

    later = make_instances(tmp_path / "later", 2, tweak=same_study(first[0]))
    send(srv, later)
    events = wait_for(lambda: (ev := nats_server.stream_events()) and len(revisions(ev, study)) >= 2 and ev,
                      REVISION_WAIT)
    assert events, srv.log_tail()
    check_instance_events(events, first + later)
    rev1, rev2 = revisions(events, study)
    assert rev2.data["revision"] == 2
    assert sorted(rev2.data["changeSet"]["additions"]) == entries(later)
    assert len(rev2.data["study"]["series"][0]["instances"]) == 6
    # Nothing more arrives: one revision per quiet period, no duplicates.
    wait_for(lambda: False, 3.0)
    assert len(revisions(nats_server.stream_events(), study)) == 2


def test_nats_outage_loses_nothing(nectar_factory, nats_server, tmp_path):
    srv = nectar_factory("--nats-url", nats_server.url, "--study-quiet-period", QUIET)
    before = make_instances(tmp_path / "before", 5)
    send(srv, before)
    wait_for(lambda: len(nats_server.stream_events()) >= 10, REVISION_WAIT)

    nats_server.stop()
    during = make_instances(tmp_path / "during", 5)
    send(srv, during)  # ingest goes on while NATS is away
    wait_for(lambda: False, 3.0)  # the quiet period passes: a revision waits in the outbox too
    nats_server.start()

    studies = [study_of(before[0]), study_of(during[0])]
    events = wait_for(lambda: (ev := nats_server.stream_events())
                      and all(revisions(ev, s) for s in studies) and ev, 60.0)
    assert events, srv.log_tail()
    check_instance_events(events, before + during)
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "JetStream kept a duplicate"
    for study, instances in zip(studies, (before, during)):
        own = [e for e in events if e.data.get("studyInstanceUID", e.cloud["subject"]) == study
               or e.cloud["subject"] in {i.sop_instance for i in instances}]
        # In order per study: every instance event comes before the study's revision.
        assert own[-1].type == "StudyRevisionEvent", [e.type for e in own]
        assert len(revisions(events, study)) == 1


def test_revision_after_kill9_is_emitted_once(nectar_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = nectar_factory("--study-quiet-period", "3s", data_dir=data_dir)
    instances = make_instances(tmp_path / "study", 3)
    send(srv, instances)
    srv.kill()  # SIGKILL while the study waits for its quiet period

    srv = nectar_factory("--study-quiet-period", "3s", data_dir=data_dir)
    study = study_of(instances[0])
    base = f"http://127.0.0.1:{srv.http_port}"
    events = wait_for(lambda: revisions(read_sse(base, after=0, idle=2.0), study), REVISION_WAIT)
    assert events, srv.log_tail()
    wait_for(lambda: False, 5.0)  # longer than the quiet period: no second revision
    events = read_sse(base, after=0, idle=2.0)
    [revision] = revisions(events, study)
    assert revision.data["revision"] == 1
    assert sorted(revision.data["changeSet"]["additions"]) == entries(instances)
    check_instance_events(events, instances)


def test_event_stream_resumes_with_last_event_id(nectar_factory, tmp_path):
    srv = nectar_factory("--study-quiet-period", "60s")
    base = f"http://127.0.0.1:{srv.http_port}"
    send(srv, make_instances(tmp_path / "a", 3))
    first = read_sse(base, after=0, want=6, idle=5.0)
    assert len(first) == 6
    send(srv, make_instances(tmp_path / "b", 3))
    # A client that saw the first four reconnects and must get everything after them.
    resumed = read_sse(base, last_event_id=first[3].position, want=8, idle=5.0)
    assert [e.position for e in resumed] == list(range(first[3].position + 1, first[3].position + 9))
    assert [e.id for e in resumed[:2]] == [e.id for e in first[4:6]]
    everything = read_sse(base, after=0, want=12, idle=5.0)
    assert [e.id for e in first[:4] + resumed] == [e.id for e in everything]


def http_delete(url: str) -> int:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_delete_appears_in_the_next_revision(nectar_factory, nats_server, tmp_path):
    srv = nectar_factory("--nats-url", nats_server.url, "--study-quiet-period", QUIET)
    instances = make_instances(tmp_path / "study", 3)
    send(srv, instances)
    study = study_of(instances[0])
    assert wait_for(lambda: revisions(nats_server.stream_events(), study), REVISION_WAIT), srv.log_tail()

    from dicomdata import read
    deleted = read(instances[0].path)
    base = f"http://127.0.0.1:{srv.http_port}/dicomweb/studies/{study}"
    assert http_delete(f"{base}/series/{deleted.SeriesInstanceUID}/instances/{deleted.SOPInstanceUID}") == 204
    assert http_delete(f"{base}/series/{deleted.SeriesInstanceUID}/instances/{deleted.SOPInstanceUID}") == 404
    assert http_delete(f"{base}/series/1.2.3.4.5.6.7.8.9") == 404

    events = wait_for(lambda: (ev := nats_server.stream_events()) and len(revisions(ev, study)) >= 2 and ev,
                      REVISION_WAIT)
    assert events, srv.log_tail()
    rev2 = revisions(events, study)[1]
    assert rev2.data["revision"] == 2
    assert rev2.data["changeSet"] == {
        "additions": [], "modifications": [],
        "deletions": [f"{deleted.SeriesInstanceUID}/{deleted.SOPInstanceUID}"],
    }
    assert sorted(rev2.data["study"]["series"][0]["instances"]) == sorted(i.sop_instance for i in instances[1:])

    # The whole study: its revision lists the remaining two and no series.
    assert http_delete(base) == 204
    events = wait_for(lambda: (ev := nats_server.stream_events()) and len(revisions(ev, study)) >= 3 and ev,
                      REVISION_WAIT)
    rev3 = revisions(events, study)[2]
    assert sorted(rev3.data["changeSet"]["deletions"]) == sorted(entries(instances[1:]))
    assert rev3.data["study"]["series"] == []
    from nectar import assert_fsck_clean
    srv.stop()
    assert_fsck_clean(srv.data_dir)


def test_nats_token_over_tls(nectar_factory, tmp_path):
    import ssl
    from events import make_tls_files
    ca, cert, key = make_tls_files(tmp_path / "tls")
    context = ssl.create_default_context(cafile=str(ca))
    server = NatsServer(tmp_path / "nats", extra_args=("--auth", "s3cret", "--tls", "--tlscert", str(cert),
                                                       "--tlskey", str(key)),
                        connect_options={"token": "s3cret", "tls": context}).start()
    try:
        srv = nectar_factory("--nats-url", server.url, "--nats-token", "s3cret", "--nats-tls-ca", str(ca),
                             "--study-quiet-period", QUIET)
        instances = make_instances(tmp_path / "study", 2)
        send(srv, instances)
        events = wait_for(lambda: (ev := server.stream_events()) and revisions(ev, study_of(instances[0])) and ev,
                          REVISION_WAIT)
        assert events, srv.log_tail()
        check_instance_events(events, instances)
    finally:
        server.stop()


def test_nats_user_password_and_a_wrong_one(nectar_factory, tmp_path):
    server = NatsServer(tmp_path / "nats", extra_args=("--user", "nectar", "--pass", "right"),
                        connect_options={"user": "nectar", "password": "right"}).start()
    try:
        wrong = nectar_factory("--nats-url", server.url, "--nats-user", "nectar", "--nats-password", "wrong",
                               "--study-quiet-period", QUIET)
        instances = make_instances(tmp_path / "study", 2)
        send(wrong, instances)  # ingest goes on; the events wait in the outbox
        assert wait_for(lambda: wrong.metrics().get("nectar_nats_retries_total", 0) >= 1, 20.0), wrong.log_tail()
        assert server.stream_events() == []
        wrong.stop()

        right = nectar_factory("--nats-url", server.url, "--nats-user", "nectar", "--nats-password", "right",
                               "--study-quiet-period", QUIET, data_dir=wrong.data_dir)
        events = wait_for(lambda: (ev := server.stream_events()) and revisions(ev, study_of(instances[0])) and ev,
                          REVISION_WAIT)
        assert events, right.log_tail()
        check_instance_events(events, instances)
    finally:
        server.stop()


def test_one_event_in_binary_mode(nectar_factory, tmp_path):
    import json
    import urllib.request
    srv = nectar_factory("--study-quiet-period", "60s")
    [instance] = make_instances(tmp_path / "one", 1)
    send(srv, [instance])
    base = f"http://127.0.0.1:{srv.http_port}"
    [stored, available] = read_sse(base, after=0, want=2, idle=5.0)
    with urllib.request.urlopen(f"{base}/events/{stored.position}", timeout=10) as response:
        headers = response.headers
        data = json.loads(response.read())
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == stored.id
    assert headers["ce-type"] == "ImageStoredEvent"
    assert headers["ce-subject"] == instance.sop_instance
    assert headers["Content-Type"].startswith("application/json")
    assert data == stored.data
    assert http_get_status(f"{base}/events/{available.position + 100}") == 404


def http_get_status(url: str) -> int:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_full_outbox_holds_ingest_back_until_nats_returns(nectar_factory, tmp_path):
    import threading
    server = NatsServer(tmp_path / "nats").start()
    server.stop()  # nectar starts while NATS is away
    srv = nectar_factory("--nats-url", server.url, "--outbox-bound", "6", "--manifest-queue", "1",
                         "--manifest-max-batch", "1", "--study-quiet-period", QUIET)
    instances = make_instances(tmp_path / "study", 12)
    result = {}
    sender = threading.Thread(target=lambda: result.update(run=storescu(srv.dimse_port, [i.path for i in instances])))
    sender.start()
    try:
        # Six events fit; then the writer waits and the association with it.
        assert wait_for(lambda: srv.metrics().get("nectar_outbox_full_total", 0) >= 1, 30.0), srv.log_tail()
        assert sender.is_alive(), "the sender finished although the outbox was full"
        server.start()
        sender.join(timeout=120)
        assert not sender.is_alive()
        assert len(result["run"].succeeded()) == len(instances), result["run"].output
        study = study_of(instances[0])
        events = wait_for(lambda: (ev := server.stream_events()) and revisions(ev, study) and ev, 60.0)
        assert events, srv.log_tail()
        check_instance_events(events, instances)
    finally:
        sender.join(timeout=120)
        server.stop()
