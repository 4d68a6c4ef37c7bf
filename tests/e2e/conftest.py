"""Every part as a real process: three gunicorn services and three workers.

Each test gets its own databases and topic prefix (from ``hecht_env``) and
free ports; every process is stopped by its pid at the end. The machinery
(``Process``, ports, readiness waits) is shared with the portal tests in
tests/support/fleet.py.
"""
from __future__ import annotations

import pytest

from tests.support.fleet import REPO, SERVICES, VENV_BIN, Fleet, Process, answers, fleet, free_port  # noqa: F401

Running = Fleet  # the name the e2e and reliability suites know


@pytest.fixture
def running(hecht_env, tmp_path):
    # No portal: the story drives the APIs only (the portal suite has its own fixture).
    with fleet(hecht_env, tmp_path, portal=False) as run:
        yield run


def _healthy(url: str) -> bool:
    return answers(url)
