"""Capacity profiles: `nectar serve --profile NAME|PATH` and the flags that override them."""

import re
import subprocess
from pathlib import Path

from pdu import A_ASSOCIATE_RJ, Raw, associate_rq, parse_reject
from peers import echoscu

from nectar import REPO, clean_env, nectar_bin

PROFILE_DIR = {"NECTAR_PROFILE_DIR": str(REPO / "capacity-profiles")}

CUSTOM = """\
name: custom
cores: 1
memory_mib: 256
workers: 1
max_associations: 3
segment_size_mib: 8
max_pdu_length: 65536
commit:
  max_batch: 8
  queue: 32
manifest:
  max_batch: 16
  queue: 64
measured:
  small_8_associations_instances_per_s: null
  large_4_associations_mb_per_s: null
  date: null
  machine: null
  command: null
"""


def log_fields(srv, message: str) -> dict[str, str]:
    """The key=value fields of the first log line containing `message`."""
    text = srv.log_path.read_text("utf-8", "replace")
    for line in text.splitlines():
        if message in line:
            return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line.split(message, 1)[1])}
    raise AssertionError(f"no log line contains {message!r}\n{srv.log_tail()}")


def assert_fields(fields: dict[str, str], expected: dict[str, object]) -> None:
    for key, value in expected.items():
        assert key in fields, f"log line lacks {key}: {fields}"
        assert fields[key] == str(value), f"{key}={fields[key]}, expected {value}: {fields}"


def test_profile_small_by_name(nectar_factory):
    srv = nectar_factory("--profile", "small", env=PROFILE_DIR)
    status, _ = srv.http_get("/health")
    assert status == 200

    profile = log_fields(srv, "capacity profile applied")
    assert_fields(profile, {
        "profile": "small", "cores": 1, "memory_mib": 512, "workers": 1, "max_associations": 16,
        "segment_size_mib": 64, "max_pdu_length": 1048576, "anonymous_memory_budget_mib": 96,
    })
    assert profile["path"] == str(REPO / "capacity-profiles" / "small.yaml"), profile

    listening = log_fields(srv, "nectar listening")
    assert_fields(listening, {"workers": 1, "max_associations": 16})
    # cores: 1 pins the one worker to the first core the process may use.
    assert re.fullmatch(r"\[\d+\]", listening["pinned_cores"]), listening
    assert "cgroup" in log_fields(srv, "cgroup limits")
    assert echoscu(srv.dimse_port).ok


def test_profile_name_from_environment(nectar_factory):
    srv = nectar_factory(env={**PROFILE_DIR, "NECTAR_PROFILE": "medium"})
    assert_fields(log_fields(srv, "capacity profile applied"), {"profile": "medium", "max_associations": 64})
    assert_fields(log_fields(srv, "nectar listening"), {"max_associations": 64})


def test_profile_custom_path(nectar_factory, tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    srv = nectar_factory("--profile", str(path))

    profile = log_fields(srv, "capacity profile applied")
    assert_fields(profile, {"profile": "custom", "max_associations": 3, "max_pdu_length": 65536})
    assert profile["path"] == str(path.resolve()), profile
    settings = log_fields(srv, "serve settings")
    assert_fields(settings, {
        "commit_max_batch": 8, "commit_queue": 32, "manifest_max_batch": 16, "manifest_queue": 64,
    })

    # The profile's limit of 3 applies: a 4th association is rejected as
    # transient (2), service provider presentation (3), local limit exceeded (2).
    open_associations = [Raw(srv.dimse_port) for _ in range(3)]
    try:
        for c in open_associations:
            c.associate()
        with Raw(srv.dimse_port) as c:
            c.send(associate_rq())
            pdu_type, body = c.recv_pdu()
            assert pdu_type == A_ASSOCIATE_RJ, f"PDU type {pdu_type}: {body.hex()}"
            assert parse_reject(body) == (2, 3, 2)
        for c in open_associations:
            c.release()
    finally:
        for c in open_associations:
            c.close()


def test_flag_overrides_profile(nectar_factory):
    srv = nectar_factory("--profile", "small", "--max-associations", "2", env=PROFILE_DIR)

    assert_fields(log_fields(srv, "capacity profile applied"), {"max_associations": 16})
    assert_fields(log_fields(srv, "a flag or its environment variable overrides the capacity profile"),
                  {"setting": "max_associations", "profile_value": 16, "value": 2})
    assert_fields(log_fields(srv, "nectar listening"), {"max_associations": 2, "workers": 1})


def run_serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(nectar_bin()), "serve", "--bind", "127.0.0.1", "--dimse-port", "0",
                           "--http-port", "0", *args], capture_output=True, text=True, timeout=30,
                          env=clean_env(env), stdin=subprocess.DEVNULL, cwd=REPO / "tests")


def test_missing_profile_name_fails(tmp_path):
    p = run_serve("--profile", "huge", "--data-dir", str(tmp_path / "data"), env=PROFILE_DIR)
    assert p.returncode != 0, p.stderr
    assert 'capacity profile "huge" not found' in p.stderr, p.stderr
    assert "huge.yaml" in p.stderr, p.stderr
    assert "large, medium, small" in p.stderr, p.stderr
    assert not (tmp_path / "data").exists(), "nectar created its data dir before rejecting the profile"


def test_invalid_profile_file_fails(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(CUSTOM.replace("workers: 1", "workers: 1\nworker: 2"))
    p = run_serve("--profile", str(path), "--data-dir", str(tmp_path / "data"))
    assert p.returncode != 0, p.stderr
    assert "invalid capacity profile" in p.stderr, p.stderr
    assert str(path) in p.stderr, p.stderr
    assert "worker" in p.stderr, p.stderr


def test_missing_profile_path_fails(tmp_path):
    path = Path(tmp_path / "absent.yaml")
    p = run_serve("--profile", str(path), "--data-dir", str(tmp_path / "data"))
    assert p.returncode != 0, p.stderr
    assert f"failed to read capacity profile {path}" in p.stderr, p.stderr
