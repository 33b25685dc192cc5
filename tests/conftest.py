"""pytest fixtures: a managed `nectar serve`, its CLI, and the corpus.

    nectar          a started server on fresh 127.0.0.1 ports with a temp data dir;
                    at teardown it gets SIGTERM and must exit 0
    nectar_factory  make(*args, data_dir=None, start=True, ...) -> Nectar, for tests
                    that need flags, restarts, several servers or kill -9
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from nectar import Nectar, nectar_bin  # noqa: E402

# The corpus and some tests use deliberately odd values; don't warn on reading them.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
# pynetdicom logs every association at INFO; keep failures readable.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_report_header(config):
    return [f"nectar binary: {nectar_bin()}", f"corpus: {corpus.FILES}"]


@pytest.fixture(scope="session")
def nectar_binary() -> Path:
    b = nectar_bin()
    if not b.is_file() or not os.access(b, os.X_OK):
        pytest.fail(f"nectar binary not found at {b}: run tests/run, or build with "
                    "`cargo build --release -p nectar-engine`, or set NECTAR_BIN", pytrace=False)
    return b


@pytest.fixture(scope="session")
def corpus_files():
    if not corpus.STAMP.is_file():
        corpus.fetch(verbose=False)
    return corpus.classify()


@pytest.fixture
def nectar_factory(request, tmp_path, nectar_binary):
    servers: list[Nectar] = []
    counter = iter(range(1000))

    def make(*args, data_dir: Path | None = None, start: bool = True, ae_title: str = "NECTAR",
             env: dict | None = None, use_env_config: bool = False) -> Nectar:
        n = next(counter)
        srv = Nectar(data_dir or tmp_path / f"data{n}", tmp_path / f"logs{n}", args=args,
                     ae_title=ae_title, env=env, use_env_config=use_env_config)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    errors = []
    for srv in servers:
        if srv.running:
            try:
                rc = srv.stop()
                if rc != 0:
                    errors.append(f"nectar serve exited {rc} on SIGTERM at teardown\n{srv.log_tail()}")
            except AssertionError as e:
                errors.append(str(e))
        if failed:
            print(srv.log_tail(80))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def nectar(nectar_factory) -> Nectar:
    return nectar_factory()
