"""Shared helpers of the benchmarks: the stack's addresses, result records, processes, RSS.

Every benchmark script prints exactly one final line::

    BENCH_JSON {"results": [{"name": ..., "metric": ..., "value": ..., "baseline": ...,
                             "ratio": ..., "target": ...}, ...], "notes": [...], "extra": {...}}

(see bench/README.md for the contract); :func:`emit` writes it.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
VENV_BIN = Path(sys.executable).parent
BENCH_PREFIX = "BENCH_JSON "
# Benchmarks run with development settings (the default JWT secret; HECHT_ENV unset means
# production, which refuses to start without its own secret), also when started by hand.
os.environ.setdefault("HECHT_ENV", "development")

# The bench stack of scripts/bench.sh; the environment (stack.sh env) overrides these.
DEFAULT_MONGO = "mongodb://127.0.0.1:27019"
DEFAULT_KAFKA = "127.0.0.1:19192"


# --------------------------------------------------------------------------------------------
# Stack and settings
# --------------------------------------------------------------------------------------------
def mongo_base() -> str:
    """The server address without a database (MONGO_URI as `stack.sh env` prints it)."""
    uri = os.environ.get("MONGO_URI") or DEFAULT_MONGO
    m = re.match(r"^(mongodb://[^/]+)", uri)
    return m.group(1) if m else uri


def kafka_servers() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_KAFKA


def tag() -> str:
    """A short unique tag for this run's databases, topics and consumer groups."""
    return time.strftime("%H%M%S") + uuid.uuid4().hex[:4]


def settings(service: str, db_name: str, prefix: str = "", **overrides):
    from hecht.config import settings as load
    from dataclasses import replace
    s = load(service)
    return replace(s, mongo_uri=f"{mongo_base()}/{db_name}", kafka_bootstrap_servers=kafka_servers(),
                   topic_prefix=prefix, **overrides)


def quiet_logs() -> None:
    import logging
    logging.basicConfig(level=logging.ERROR)
    for name in ("kafka", "pymongo", "hecht", "services"):
        logging.getLogger(name).setLevel(logging.ERROR)


def create_topic(name: str, partitions: int = 3) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError
    admin = KafkaAdminClient(bootstrap_servers=kafka_servers(), request_timeout_ms=30000,
                             client_id="hecht-bench")
    try:
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()


def delete_topics(prefix: str) -> None:
    """Best effort: remove the topics a run created (they all start with its prefix)."""
    if not prefix:
        return
    from kafka import KafkaAdminClient
    try:
        admin = KafkaAdminClient(bootstrap_servers=kafka_servers(), request_timeout_ms=30000,
                                 client_id="hecht-bench")
        try:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - cleanup must not fail a run
        pass


def drop_databases(names) -> None:
    import pymongo
    try:
        client = pymongo.MongoClient(mongo_base(), serverSelectionTimeoutMS=5000)
        for name in names:
            try:
                client.drop_database(name)
            except Exception:  # noqa: BLE001
                pass
        client.close()
    except Exception:  # noqa: BLE001
        pass


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (/proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------
# Statistics and result records
# --------------------------------------------------------------------------------------------
def percentile(values, p: float) -> float | None:
    """Linear-interpolated percentile (p in 0–100); None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    if len(xs) == 1:
        return float(xs[0])
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def median(values) -> float | None:
    return percentile(values, 50)


def quantiles(values, points: int = 101) -> list[float]:
    """A compact CDF: the 0th..100th percentiles (for charts), rounded."""
    if not values:
        return []
    return [round(percentile(values, 100 * i / (points - 1)), 4) for i in range(points)]


_TARGET = re.compile(r"^\s*(ratio|value)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*$")


def target_met(target: str | None, value, ratio) -> bool | None:
    """Evaluate a target such as ``ratio >= 0.5`` or ``value < 1000``; None if it cannot be."""
    if not target:
        return None
    m = _TARGET.match(target)
    if not m:
        return None
    lhs = ratio if m.group(1) == "ratio" else value
    if lhs is None:
        return None
    bound = float(m.group(3))
    return {"<": lhs < bound, "<=": lhs <= bound, ">": lhs > bound, ">=": lhs >= bound}[m.group(2)]


def entry(name: str, metric: str, value, baseline=None, target: str | None = None, *,
          ratio=None, note: str | None = None, **extra) -> dict:
    """One result row. ``ratio`` defaults to value / baseline."""
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    row = {"name": name, "metric": metric, "value": _round(value), "baseline": _round(baseline),
           "ratio": _round(ratio, 3), "target": target}
    met = target_met(target, value, ratio)
    if met is not None:
        row["met"] = met
    if note:
        row["note"] = note
    row.update(extra)
    return row


def _round(x, digits: int = 2):
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return x
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return round(float(x), digits) if abs(x) < 1e6 else float(round(x))


def emit(results: list[dict], notes: list[str] | None = None, extra: dict | None = None) -> None:
    """The contract: one last line ``BENCH_JSON {...}`` on stdout."""
    payload = {"results": results, "notes": notes or [], "extra": extra or {}}
    sys.stdout.flush()
    print(BENCH_PREFIX + json.dumps(payload, default=str), flush=True)


def log(msg: str) -> None:
    """Progress for the operator: stderr, so stdout stays parseable."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def profile_arg(argv=None) -> str:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", choices=("quick", "full"),
                    default=os.environ.get("HECHT_BENCH_PROFILE", "quick"))
    args, _ = ap.parse_known_args(argv)
    return args.profile


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """A child process in its own session, stopped by its pid (and its group: gunicorn's workers)."""
    name: str
    argv: list[str]
    env: dict
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry_ in os.listdir("/proc"):
        if not entry_.isdigit():
            continue
        try:
            with open(f"/proc/{entry_}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry_))
    return sorted(out)


def rss_mb(pid: int) -> float | None:
    """Resident set size in MiB (psutil if installed, else /proc/<pid>/status VmRSS)."""
    try:
        import psutil  # type: ignore
        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - gone
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001
            last = e
            last_ok = False
        else:
            last_ok = bool(last)
        if last_ok:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def machine() -> dict:
    import platform
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_gib": mem_gib, "cpu": cpu, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "loadavg_at_start": load}


@dataclass
class Timer:
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
