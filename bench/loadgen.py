"""The HTTP load generator: its own process, so its CPU never counts as the server's.

Run as ``python -m bench.loadgen`` with a JSON spec on stdin; prints one JSON document with
one record per request on stdout. Two modes:

- ``rate``: open loop. Request *i* is due at ``start + i / rate``; a pool of threads sends
  them, and latency is measured from the *due* time, so a server that falls behind shows
  its queueing (no coordinated omission). ``duration_s`` bounds the run.
- ``closed``: ``concurrency`` threads each send requests back to back, ``count`` in all
  (or until ``max_s``); latency from send to the end of the response.

Spec: ``{"mode", "method", "url" | "urls", "headers", "body" (a JSON string template;
``{i}``, ``{n6}``, ``{riziv}``, ``{uniq}`` are replaced per request), "rate", "duration_s",
"count", "concurrency", "threads", "timeout_s", "id_field", "max_backlog"}``. ``urls`` cycles
through several URLs. Each record: ``[due_or_sent_monotonic, latency_s, status, id_or_null]``.
``max_backlog`` (rate mode) stops the run early once more requests than that wait for a
thread: the server cannot sustain the rate (the result's ``aborted_at`` says when).

``sequences`` (instead of ``url``/``urls``): a list of request sequences, each a list of
``{"method", "url", "headers"}``; request *i* sends sequence ``i % len(sequences)`` step by
step (one latency for the whole sequence, the status of the first step that is not 2xx, else
the last one's). So each request can carry its own user's cookie or token, and "the API
calls a page makes" can be timed as one unit. ``allow_redirects`` (default true) applies to
every request; set it false to count a redirect (e.g. to a sign-in page) as what it is.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid


def riziv(n6: int, code: str = "003") -> str:
    """A valid (mod 97) RIZIV number built from the published check rule."""
    n6 %= 1_000_000
    return f"{n6:06d}{97 - n6 % 97:02d}{code}"


def render(template: str | None, i: int, uniq: str, base: int) -> bytes | None:
    if template is None:
        return None
    n6 = base + i
    return (template.replace("{i}", str(i)).replace("{n6}", f"{n6:06d}").replace("{riziv}", riziv(n6))
            .replace("{uniq}", uniq)).encode()


def main() -> None:
    import requests
    spec = json.load(sys.stdin)
    mode = spec.get("mode", "closed")
    method = spec.get("method", "GET").upper()
    sequences = spec.get("sequences")
    urls = spec.get("urls") or ([spec["url"]] if "url" in spec else [])
    allow_redirects = bool(spec.get("allow_redirects", True))
    headers = dict(spec.get("headers") or {})
    template = spec.get("body")
    if template is not None:
        headers.setdefault("Content-Type", "application/json")
    timeout = float(spec.get("timeout_s", 30))
    id_field = spec.get("id_field")
    uniq = uuid.uuid4().hex[:8]
    base = int(spec.get("base", 0))
    records: list = []
    lock = threading.Lock()
    local = threading.local()

    def session():
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        return s

    def one(i: int, t0: float) -> None:
        if sequences:
            return one_sequence(i, t0)
        url = urls[i % len(urls)]
        body = render(template, i, uniq, base)
        rid = None
        try:
            r = session().request(method, url, data=body, headers=headers, timeout=timeout,
                                  allow_redirects=allow_redirects)
            status = r.status_code
            if id_field and r.status_code < 300:
                try:
                    rid = r.json().get(id_field)
                except ValueError:
                    pass
        except Exception as e:  # noqa: BLE001 - a failed request is a result too
            status = f"error:{type(e).__name__}"
        latency = time.monotonic() - t0
        with lock:
            records.append([t0, latency, status, rid])

    def one_sequence(i: int, t0: float) -> None:
        status = None
        try:
            for step in sequences[i % len(sequences)]:
                session().cookies.clear()   # each step carries its own user's cookie, never another's
                r = session().request(step.get("method", "GET").upper(), step["url"],
                                      headers=step.get("headers") or {}, timeout=timeout,
                                      allow_redirects=allow_redirects)
                r.content  # noqa: B018 - the whole body, as a browser would read it
                status = r.status_code
                if not 200 <= status < 300:
                    break
        except Exception as e:  # noqa: BLE001 - a failed request is a result too
            status = f"error:{type(e).__name__}"
        latency = time.monotonic() - t0
        with lock:
            records.append([t0, latency, status, None])

    started = time.monotonic()
    if mode == "rate":
        rate = float(spec["rate"])
        duration = float(spec["duration_s"])
        total = int(rate * duration)
        q: queue.Queue = queue.Queue()

        def worker():
            while True:
                item = q.get()
                if item is None:
                    return
                one(*item)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(int(spec.get("threads", 32)))]
        for t in threads:
            t.start()
        lag_max = 0.0
        max_backlog = int(spec.get("max_backlog", 10**9))
        aborted_at = None
        for i in range(total):
            due = started + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                lag_max = max(lag_max, now - due)
            if q.qsize() > max_backlog:
                aborted_at = i  # the server cannot keep up: stop adding to its queue
                break
            q.put((i, due))
        for _ in threads:
            q.put(None)
        for t in threads:
            t.join(timeout + 5)
        extra = {"scheduler_lag_max_s": round(lag_max, 4), "planned": total, "aborted_at": aborted_at}
    else:
        count = int(spec.get("count", 100))
        max_s = float(spec.get("max_s", 1e9))
        counter = iter(range(count))
        clock = threading.Lock()

        def worker():
            while time.monotonic() - started < max_s:
                with clock:
                    i = next(counter, None)
                if i is None:
                    return
                one(i, time.monotonic())

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(int(spec.get("concurrency", 1)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        extra = {}
    elapsed = time.monotonic() - started
    json.dump({"records": records, "elapsed_s": elapsed, **extra}, sys.stdout)


def run(spec: dict, timeout: float | None = None) -> dict:
    """Run the load generator in its own process and return its result."""
    import subprocess
    from bench import lib
    proc = subprocess.run([sys.executable, "-m", "bench.loadgen"], input=json.dumps(spec), text=True,
                          capture_output=True, cwd=lib.REPO, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def summarize(result: dict) -> dict:
    """Latency percentiles (ms), throughput and status counts of a load-generator result."""
    from collections import Counter
    from bench import lib
    recs = result["records"]
    ok = [r[1] * 1000 for r in recs if isinstance(r[2], int) and r[2] < 400]
    statuses = Counter(str(r[2]) for r in recs)
    return {"requests": len(recs), "ok": len(ok), "statuses": dict(statuses),
            "throughput_rps": len(recs) / result["elapsed_s"] if result["elapsed_s"] else None,
            "p50_ms": lib.percentile(ok, 50), "p90_ms": lib.percentile(ok, 90),
            "p99_ms": lib.percentile(ok, 99), "max_ms": max(ok) if ok else None}


if __name__ == "__main__":
    main()
