"""Every part as a real process: three gunicorn services and three workers.

Each test gets its own databases and topic prefix (from ``hecht_env``) and
free ports; every process is stopped by its pid at the end.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SERVICES = ("members", "agreements", "notify")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the gunicorn master and its workers
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class Running:
    urls: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)

    def restart(self, name: str) -> None:
        p = self.processes[name]
        p.kill9()
        p.start()


@pytest.fixture
def running(hecht_env, tmp_path, monkeypatch):
    env = dict(os.environ)
    env.update({"HECHT_WEBHOOK_RETRY_SCHEDULE_S": env.get("HECHT_WEBHOOK_RETRY_SCHEDULE_S", "0.2,0.5,1,2,4,8"),
                "HECHT_LOG_LEVEL": "INFO", "WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1",
                # short leases: a worker killed mid-batch has its claims taken over within seconds
                "HECHT_MAIL_LEASE_S": "8", "HECHT_WEBHOOK_TIMEOUT_S": "3",
                # the fault runs' steady load signs GPs up from one address for minutes
                "HECHT_SIGNUP_RATE_LIMIT": "100000"})
    ports = {s: free_port() for s in SERVICES}
    run = Running(urls={s: f"http://127.0.0.1:{p}" for s, p in ports.items()})
    for s in SERVICES:
        web_env = dict(env, HECHT_BIND=f"127.0.0.1:{ports[s]}")
        run.processes[s] = Process(s, [str(VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py",
                                       f"services.{s}.app:create_app()"], web_env, tmp_path / f"{s}.log")
        worker_env = dict(env, HECHT_METRICS_PORT=str(free_port()))
        run.processes[f"{s}-worker"] = Process(f"{s}-worker", [str(VENV_BIN / "hecht"), "worker", s],
                                               worker_env, tmp_path / f"{s}-worker.log")
    try:
        for p in run.processes.values():
            p.start()
        for s, url in run.urls.items():
            wait_until(lambda: _healthy(url), timeout=30, message=f"{s} to answer /healthz")
        yield run
    finally:
        for p in run.processes.values():
            p.stop()
        for p in run.processes.values():
            if p.proc and p.proc.returncode not in (0, -15, None) and p.log.exists():
                print(f"--- {p.name} exited {p.proc.returncode}; last log lines:")
                print(p.log.read_text()[-3000:])


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
