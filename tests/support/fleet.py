"""The whole of hecht as real processes, for tests that need more than one service.

``fleet(hecht_env, log_dir)`` starts members, agreements and notify (gunicorn), their
three workers and the portal (gunicorn) on free ports against the test stack, with the
per-test databases and topic prefix of the ``hecht_env`` fixture, waits until every web
process answers ``/readyz`` (``/healthz`` for the portal when it is not built yet) and
stops every process by its pid (process group) at the end.

    with fleet(hecht_env, tmp_path) as f:
        requests.get(f.urls["portal"] + "/regions")
        f.mails("gp@example.org")          # messages in the SMTP sink's Maildir

The e2e suite (tests/e2e/conftest.py) uses the same ``Process`` machinery.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import requests

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SERVICES = ("members", "agreements", "notify")
WEB = SERVICES + ("portal",)

# Settings every fleet process gets (tests may override through ``extra_env``).
BASE_ENV = {
    "HECHT_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.5,1,2,4,8",
    "HECHT_LOG_LEVEL": "INFO", "WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1",
    # short leases: a worker killed mid-batch has its claims taken over within seconds
    "HECHT_MAIL_LEASE_S": "8", "HECHT_WEBHOOK_TIMEOUT_S": "3",
    # tests sign many GPs up from one client address
    "HECHT_SIGNUP_RATE_LIMIT": "100000",
    # the portal: plain http on loopback, so its cookie cannot be Secure (see services/portal)
    "HECHT_ENV": "development",
}


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
        out.close()  # the child holds its own copy
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)  # the gunicorn master and its workers
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def gunicorn(name: str, port: int, env: dict, log_dir: Path) -> Process:
    """A web service as the deployments run it (deploy/gunicorn.conf.py)."""
    return Process(name, [str(VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py",
                          f"services.{name}.app:create_app()"],
                   dict(env, HECHT_BIND=f"127.0.0.1:{port}"), Path(log_dir) / f"{name}.log")


def worker(name: str, env: dict, log_dir: Path) -> Process:
    return Process(f"{name}-worker", [str(VENV_BIN / "hecht"), "worker", name],
                   dict(env, HECHT_METRICS_PORT=str(free_port())), Path(log_dir) / f"{name}-worker.log")


def answers(url: str, path: str = "/healthz") -> bool:
    try:
        return requests.get(f"{url}{path}", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class Fleet:
    urls: dict[str, str]
    env: dict
    log_dir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def maildir(self) -> str | None:
        """The SMTP sink's Maildir (``HECHT_MAILDIR`` from deploy/local/stack.sh env)."""
        return self.env.get("HECHT_MAILDIR")

    def mails(self, to: str | None = None) -> list:
        """Messages in the sink addressed to ``to`` (tests/support/maildir.py)."""
        from tests.support import maildir
        return maildir.messages(to)

    def restart(self, name: str) -> None:
        p = self.processes[name]
        p.kill9()
        p.start()

    def start_portal(self, name: str, **env) -> str:
        """One more portal process with other settings (e.g. ``HECHT_ENV="production"``);
        stopped with the fleet. Returns its URL."""
        port = free_port()
        env.setdefault("HECHT_PORTAL_URL", f"http://127.0.0.1:{port}")  # its own links point at it
        p = gunicorn("portal", port, dict(self.env, **{k: str(v) for k, v in env.items()}), self.log_dir)
        p.name, p.log = name, Path(self.log_dir) / f"{name}.log"
        self.processes[name] = p.start()
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(url), timeout=30, message=f"{name} to answer /healthz")
        return url


@contextmanager
def fleet(hecht_env: dict, log_dir: Path, *, portal: bool = True, services: tuple = SERVICES,
          workers: bool = True, extra_env: dict | None = None) -> Iterator[Fleet]:
    """Start the processes, wait until they answer, yield a :class:`Fleet`, stop them by pid.

    ``hecht_env`` is the fixture's value (its monkeypatched environment is already in
    ``os.environ``); the portal gets its own database ``t<suffix>_portal``, dropped at the end.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    names = tuple(services) + (("portal",) if portal else ())
    ports = {s: free_port() for s in names}
    urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    env = dict(os.environ)
    env.update(BASE_ENV)
    env["HECHT_WEBHOOK_RETRY_SCHEDULE_S"] = os.environ.get("HECHT_WEBHOOK_RETRY_SCHEDULE_S",
                                                           BASE_ENV["HECHT_WEBHOOK_RETRY_SCHEDULE_S"])
    mongo_base = env.get("HECHT_TEST_MONGO", "mongodb://127.0.0.1:27018")
    portal_db = f"t{hecht_env['suffix']}_portal"
    env["HECHT_PORTAL_MONGO_URI"] = f"{mongo_base}/{portal_db}"
    for s in WEB:
        env[f"HECHT_{s.upper()}_URL"] = urls.get(s, env.get(f"HECHT_{s.upper()}_URL", ""))
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    f = Fleet(urls=urls, env=env, log_dir=log_dir)
    for s in services:
        f.processes[s] = gunicorn(s, ports[s], env, log_dir)
        if workers:
            f.processes[f"{s}-worker"] = worker(s, env, log_dir)
    if portal:
        f.processes["portal"] = gunicorn("portal", ports["portal"], env, log_dir)
    try:
        for p in f.processes.values():
            p.start()
        for s, url in urls.items():
            wait_until(lambda: answers(url), timeout=30, message=f"{s} to answer /healthz")
        for s, url in urls.items():
            wait_until(lambda: answers(url, "/readyz"), timeout=30, message=f"{s} to answer /readyz")
        yield f
    finally:
        for p in f.processes.values():
            p.stop()
        for p in f.processes.values():
            if p.proc and p.proc.returncode not in (0, -15, None):
                print(f"--- {p.name} exited {p.proc.returncode}; last log lines:")
                print(p.tail())
        if portal:
            _drop(mongo_base, portal_db)


def _drop(mongo_base: str, db: str) -> None:
    try:
        import pymongo
        client = pymongo.MongoClient(mongo_base, serverSelectionTimeoutMS=3000)
        try:
            client.drop_database(db)
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - best-effort cleanup (the stack may be down)
        pass
