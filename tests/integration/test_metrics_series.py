"""Each service's /metrics exposes its documented series, and only its own (issue 17).

Real processes, as `make run` and the deployments start them: each web service under gunicorn
with two workers and its OWN ``PROMETHEUS_MULTIPROC_DIR`` (so /metrics sums the workers), and
each worker (`hecht worker SERVICE`) serving its registry on ``HECHT_METRICS_PORT``. A region
registered through the members API flows through all of them, so the series have samples.

``DOCUMENTED`` is the list of series (the README has none yet; it is in the helper's report).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import bearer, wait_until

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("members", "agreements", "notify")
PATHS = {"members": "/v1/regions/r1/members", "agreements": "/v1/regions/r1/agreements",
         "notify": "/v1/regions/r1/subscriptions"}

# The documented series: name → type, per process kind (web: every API service; worker: per service).
WEB = {"hecht_http_requests_total": "counter", "hecht_http_request_seconds": "histogram"}
RELAY = {"hecht_outbox_published_total": "counter", "hecht_outbox_relay_errors_total": "counter"}
CONSUMER = {"hecht_consumer_events_total": "counter", "hecht_consumer_lag": "gauge"}
NOTIFY_ONLY = {"hecht_webhook_attempts_total": "counter", "hecht_webhook_attempt_seconds": "histogram",
               "hecht_emails_total": "counter", "hecht_notify_contacts_total": "counter"}
DOCUMENTED = {
    "web": WEB,
    "members-worker": RELAY,
    "agreements-worker": {**RELAY, **CONSUMER},
    "notify-worker": {**RELAY, **CONSUMER, **NOTIFY_ONLY},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _types(text: str) -> dict[str, str]:
    """``# TYPE name type`` lines; counters are declared without their ``_total``."""
    out = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out[name + "_total" if kind == "counter" and not name.endswith("_total") else name] = kind
    return out


def _samples(text: str, name: str) -> list[tuple[dict, float]]:
    out = []
    for labels, value in re.findall(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        out.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


class Processes:
    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict, log: Path) -> subprocess.Popen:
        handle = open(log, "wb")
        p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)   # its own session: gunicorn's workers with it
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture
def fleet(hecht_env, tmp_path):
    procs = Processes()
    env = dict(os.environ, HECHT_LOG_LEVEL="WARNING", WEB_CONCURRENCY="2", PYTHONPATH=str(REPO))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    web, workers = {}, {}
    try:
        for service in SERVICES:
            web[service] = port = free_port()
            procs.start([str(REPO / ".venv/bin/gunicorn"), "-c", "deploy/gunicorn.conf.py",
                         f"services.{service}.app:create_app()"],
                        dict(env, HECHT_BIND=f"127.0.0.1:{port}",
                             PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus" / service)),
                        tmp_path / f"{service}-web.log")
            workers[service] = port = free_port()
            procs.start([sys.executable, "-m", "hecht.cli", "worker", service],
                        dict(env, HECHT_METRICS_PORT=str(port)), tmp_path / f"{service}-worker.log")
        for port in (*web.values(), *workers.values()):
            wait_until(lambda: _up(port), timeout=60, interval=0.3, message=f"port {port}")
        yield {"web": web, "workers": workers, "logs": tmp_path}
    finally:
        procs.stop()


def _up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def metrics(port: int) -> str:
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return r.text


def test_each_process_exposes_its_documented_series_and_only_its_own(fleet):
    web, workers = fleet["web"], fleet["workers"]
    requests_made = 6
    for service in SERVICES:
        for _ in range(requests_made):   # spread over both gunicorn workers
            assert requests.get(f"http://127.0.0.1:{web[service]}{PATHS[service]}", timeout=5).status_code == 401
    region = {"id": "metrics-r", "name": "Metrics", "country": "BE", "kind": "other", "municipalities": ["Gent"]}
    r = requests.post(f"http://127.0.0.1:{web['members']}/v1/regions", json=region,
                      headers=bearer("platform-admin"), timeout=10)
    assert r.status_code == 201, r.text

    for service in SERVICES:
        text = metrics(web[service])
        types = _types(text)
        for name, kind in DOCUMENTED["web"].items():
            assert types.get(name) == kind, (service, name)
        samples = _samples(text, "hecht_http_requests_total")
        assert {labels["service"] for labels, _ in samples} == {service}, "another service's series"
        mine = sum(v for labels, v in samples if labels["method"] == "GET" and labels["status"] == "401")
        assert mine == requests_made, f"{service}: /metrics does not sum its gunicorn workers ({samples})"
        assert _samples(text, "hecht_http_request_seconds_count")

    # the region.registered event: members relays it, agreements and notify consume it
    def worker_text(service):
        return metrics(workers[service])
    wait_until(lambda: any(labels.get("service") == "members" and v >= 1 for labels, v in
                           _samples(worker_text("members"), "hecht_outbox_published_total")),
               timeout=60, message="members' relay published")
    for group in ("agreements", "notify"):
        wait_until(lambda: any(labels.get("group") == group and labels.get("outcome") == "applied" for labels, _
                               in _samples(worker_text(group), "hecht_consumer_events_total")),
                   timeout=60, message=f"{group} consumed the region")
    for service in SERVICES:
        text = worker_text(service)
        types = _types(text)
        for name, kind in DOCUMENTED[f"{service}-worker"].items():
            assert types.get(name) == kind, (service, name)
        others = set().union(*(DOCUMENTED[f"{s}-worker"] for s in SERVICES if s != service)) - \
            set(DOCUMENTED[f"{service}-worker"])
        assert not others & set(types), f"{service} worker exposes another service's series"
        for name in ("hecht_outbox_published_total", "hecht_consumer_events_total"):
            assert {labels.get("service") or labels.get("group") for labels, _ in _samples(text, name)} <= {service}
