"""The services as real processes: one gunicorn per service and one ``hecht worker`` each.

Started the way production runs them (``deploy/gunicorn.conf.py``, ``WEB_CONCURRENCY`` 2,
the sync worker), with this run's own databases (``hecht_bench_<tag>_<service>``) and topic
prefix, on free ports; stopped by pid (process group) at the end. A service whose code is
not there yet (no ``services/<name>/app.py``) is left out and reported as unavailable.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench import lib

SERVICES = ("members", "agreements", "notify")


def available(service: str) -> bool:
    return (lib.REPO / "services" / service / "app.py").exists()


def has_worker(service: str) -> bool:
    return (lib.REPO / "services" / service / "worker.py").exists()


@dataclass
class Fleet:
    tag: str
    prefix: str
    urls: dict[str, str] = field(default_factory=dict)
    dbs: dict[str, str] = field(default_factory=dict)
    procs: dict[str, lib.Proc] = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    log_dir: Path | None = None
    missing: list[str] = field(default_factory=list)

    # -- description shared with the benchmark scripts (HECHT_BENCH_FLEET) ---------------------
    def describe(self) -> dict:
        return {"tag": self.tag, "prefix": self.prefix, "urls": self.urls, "dbs": self.dbs,
                "mongo": lib.mongo_base(), "kafka": lib.kafka_servers(), "missing": self.missing,
                "pids": {name: p.pid for name, p in self.procs.items()},
                "jwt_secret": self.env.get("HECHT_JWT_SECRET")}

    def mongo_uri(self, service: str) -> str:
        return f"{lib.mongo_base()}/{self.dbs[service]}"

    # -- processes ---------------------------------------------------------------------------
    def start(self, services=SERVICES, web_workers: int = 2, extra_env: dict | None = None,
              timeout: float = 60) -> "Fleet":
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": lib.kafka_servers(),
            "HECHT_TOPIC_PREFIX": self.prefix,
            "HECHT_WEBHOOKS_ALLOW_PRIVATE": "1",
            "HECHT_SIGNUP_RATE_LIMIT": "100000000",   # the load generator is one address
            "HECHT_LOG_LEVEL": "WARNING",
            "WEB_CONCURRENCY": str(web_workers),
            "GUNICORN_MAX_REQUESTS": "0",             # no recycling during a measurement
            "GUNICORN_MAX_REQUESTS_JITTER": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("MONGO_URI", None)
        env.update(extra_env or {})
        self.env = env
        self.log_dir = self.log_dir or (lib.REPO / "var" / "bench" / self.tag)
        for s in services:
            if not available(s):
                self.missing.append(s)
                continue
            self.dbs[s] = f"hecht_bench_{self.tag}_{s}"
            env[f"HECHT_{s.upper()}_MONGO_URI"] = self.mongo_uri(s)
        for s in self.dbs:
            port = lib.free_port()
            self.urls[s] = f"http://127.0.0.1:{port}"
            web_env = dict(env, HECHT_BIND=f"127.0.0.1:{port}")
            self.procs[s] = lib.Proc(s, [str(lib.VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py",
                                         f"services.{s}.app:create_app()"], web_env,
                                     self.log_dir / f"{s}.log").start()
            if has_worker(s):
                worker_env = dict(env, HECHT_METRICS_PORT=str(lib.free_port()))
                self.procs[f"{s}-worker"] = lib.Proc(f"{s}-worker", [str(lib.VENV_BIN / "hecht"), "worker", s],
                                                     worker_env, self.log_dir / f"{s}-worker.log").start()
        try:
            for s, url in self.urls.items():
                lib.wait_until(lambda: self._healthy(url), timeout=timeout, what=f"{s} /healthz")
                lib.wait_until(lambda: len(self.web_workers(s)) >= web_workers, timeout=timeout,
                               what=f"{s}'s gunicorn workers")
        except Exception:
            for p in self.procs.values():
                if not p.alive():
                    lib.log(f"{p.name} exited; log:\n{p.tail()}")
            self.stop()
            raise
        return self

    @staticmethod
    def _healthy(url: str) -> bool:
        import requests
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def web_workers(self, service: str) -> list[int]:
        p = self.procs.get(service)
        return lib.children(p.pid) if p and p.alive() else []

    def processes(self) -> dict[str, int]:
        """name → pid of every process whose memory counts: gunicorn workers and Kafka workers."""
        out = {}
        for s in self.urls:
            for i, pid in enumerate(self.web_workers(s), start=1):
                out[f"{s} web worker {i}"] = pid
            if f"{s}-worker" in self.procs and self.procs[f"{s}-worker"].alive():
                out[f"{s} hecht worker"] = self.procs[f"{s}-worker"].pid
        return out

    def rss(self) -> dict[str, float | None]:
        return {name: lib.rss_mb(pid) for name, pid in self.processes().items()}

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if not p.alive()]

    def stop(self, cleanup: bool = True) -> None:
        for p in self.procs.values():
            p.stop()
        if cleanup:
            lib.drop_databases(self.dbs.values())
            lib.delete_topics(self.prefix)

    # -- helpers for the benchmarks ------------------------------------------------------------
    def token(self, role: str, region: str | None = None, member: str | None = None, ttl: int = 7200) -> str:
        from hecht.auth import mint
        from hecht.config import settings
        return mint(settings("members"), roles=[role], region=region, member=member, ttl=ttl)


def from_env() -> Fleet | None:
    """The fleet the harness started (HECHT_BENCH_FLEET), or None when a script runs alone."""
    raw = os.environ.get("HECHT_BENCH_FLEET")
    if not raw:
        return None
    d = json.loads(raw)
    f = Fleet(tag=d["tag"], prefix=d["prefix"], urls=d["urls"], dbs=d["dbs"], missing=d.get("missing", []))
    return f


class own_fleet:
    """Context manager: the harness's fleet if there is one, else a fleet of our own."""

    def __init__(self, services=SERVICES, **kw):
        self.services, self.kw, self.fleet, self.owned = services, kw, None, False

    def __enter__(self) -> Fleet:
        self.fleet = from_env()
        if self.fleet is None:
            tag = lib.tag()
            self.fleet = Fleet(tag=tag, prefix=f"bench{tag}.").start(self.services, **self.kw)
            self.owned = True
        return self.fleet

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.fleet.stop()

