"""Benchmark — GP sign-up: requests/s and p99 latency, hecht vs a bare Flask + pymongo insert.

Both sides run under gunicorn with the same config (``deploy/gunicorn.conf.py``, 2 sync
workers) against the same MongoDB-protocol server (SecantusDB locally), each in its own database:

- **hecht**: ``POST /v1/regions/{r}/members`` of the members service — rate limit counter,
  region (read at most every 5 s per process), field rules (RIZIV check digits, postcode, municipality, email
  normalisation), then one multi-document transaction: the member (unique indexes on email
  and registration) and its ``member.signed_up`` event in the outbox collection;
- **baseline**: ``bench/baseline_app.py`` — parse the JSON, insert it, answer 201.

A load generator in its own process (threads, a new connection per request as gunicorn's
sync workers close them) sends distinct valid sign-ups for a fixed time. Rounds alternate
which side goes first; rates and latencies are over all rounds, the ratio is the median of
the rounds' ratios (each round measures both sides back to back). The run stops starting
rounds after ``BUDGET_S`` so it stays under 60 s.

Run standalone against any stack::

    MONGO_URI=mongodb://127.0.0.1:27019 python bench/bench_signup.py [--profile quick|full]

It prints a human summary with the ratio, then the ``BENCH_JSON`` line (bench/lib.py).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

SIZES = {"quick": {"rounds": 6, "seconds": 2.5, "concurrency": 4},
         "full": {"rounds": 8, "seconds": 2.5, "concurrency": 4}}
TARGET = "ratio >= 0.5"
BUDGET_S = 45.0  # no new round after this (a round is two measurements of `seconds`)
REGION = {"id": "bench-gent", "name": "Bench ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent", "Merelbeke", "Melle", "Destelbergen"]}
# Serial numbers reserved per load thread and round, so sign-ups never collide. A physician's
# RIZIV number starts with 1: 100 000 six-digit serials in all, plenty for (rounds + 1) × threads × BLOCK.
BLOCK = 2_000


def sign_up_body(n: int) -> bytes:
    """A distinct, valid sign-up: RIZIV number built from the mod-97 rule, unique email."""
    if not 0 <= n < 100_000:
        raise ValueError("serial out of the physicians' range")
    n6 = 100_000 + n
    return json.dumps({
        "given_name": "An", "family_name": f"Peeters {n}", "email": f"gp{n}@bench.example", "language": "nl",
        "registration": {"scheme": "RIZIV", "number": f"{n6:06d}{97 - n6 % 97:02d}003"},
        "practice": {"name": f"Praktijk {n}", "postcode": "9000", "municipality": "Gent"},
    }).encode()


def load(port: int, seconds: float, concurrency: int, first_serial: int, results) -> None:
    """The load generator (its own process): ``concurrency`` threads for ``seconds``."""
    import http.client
    import threading

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(w: int) -> None:
        mine, codes = [], {}
        serial = first_serial + w * BLOCK
        while time.perf_counter() < stop_at:
            body = sign_up_body(serial)
            serial += 1
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", f"/v1/regions/{REGION['id']}/members", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                conn.close()
            except OSError:
                status = 0
            mine.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({"latencies": latencies, "statuses": statuses, "elapsed": time.perf_counter() - began})


def measure(port: int, seconds: float, concurrency: int, first_serial: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=load, args=(port, seconds, concurrency, first_serial, q), daemon=True)
    p.start()
    out = q.get(timeout=seconds + 60)
    p.join(timeout=10)
    return out


def start_server(name: str, app: str, port: int, env: dict, run_tag: str) -> lib.Proc:
    argv = [str(lib.VENV_BIN / "gunicorn"), "-c", str(lib.REPO / "deploy" / "gunicorn.conf.py"), app]
    # No worker recycling (max_requests) during a run of seconds: it would restart workers
    # mid-measurement, an artefact of the run's length rather than a cost per request.
    env = {**os.environ, **env, "HECHT_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
           "GUNICORN_THREADS": "1", "GUNICORN_MAX_REQUESTS": "0", "HECHT_LOG_LEVEL": "warning"}
    return lib.Proc(name, argv, env, lib.REPO / "var" / "bench" / f"signup-{run_tag}" / f"{name}.log").start()


def wait_healthy(proc: lib.Proc, port: int) -> None:
    import http.client

    def up():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    lib.wait_until(up, timeout=20, what=f"{proc.name} to answer /healthz")


def create_region(port: int) -> None:
    """Through the API, like a platform-admin would (development token, HECHT_JWT_SECRET)."""
    import http.client
    from hecht.auth import mint
    from hecht.config import settings
    token = mint(settings("members"), roles=["platform-admin"], ttl=300)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/regions", body=json.dumps(REGION),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 201:
        raise RuntimeError(f"could not create the benchmark region: {resp.status} {body[:300]!r}")


def warm_up(port: int, first_serial: int, n: int = 20) -> None:
    """First requests build indexes and connection pools in both workers; not measured."""
    r = measure(port, 1.0, 2, first_serial)
    bad = {k: v for k, v in r["statuses"].items() if k not in (201, 202)}  # hecht's public answer is 202
    if bad:
        raise RuntimeError(f"warm-up answered {bad} on port {port}")


def summarise(runs: list[dict]) -> dict:
    latencies = [x for r in runs for x in r["latencies"]]
    ok = sum(r["statuses"].get(201, 0) + r["statuses"].get(202, 0) for r in runs)
    total = sum(sum(r["statuses"].values()) for r in runs)
    elapsed = sum(r["elapsed"] for r in runs)
    return {"rps": ok / elapsed if elapsed else 0.0, "p50_ms": 1000 * lib.percentile(latencies, 50),
            "p99_ms": 1000 * lib.percentile(latencies, 99), "requests": total, "errors": total - ok,
            "statuses": {str(k): sum(r["statuses"].get(k, 0) for r in runs)
                         for k in sorted({k for r in runs for k in r["statuses"]})}}


def main() -> None:
    profile = lib.profile_arg()
    size = SIZES[profile]
    started = time.monotonic()
    run_tag = lib.tag()
    dbs = {"hecht": f"bench_{run_tag}_members", "baseline": f"bench_{run_tag}_baseline"}
    base = lib.mongo_base()
    ports = {"hecht": lib.free_port(), "baseline": lib.free_port()}
    procs = {
        "hecht": start_server("hecht", "services.members.app:create_app()", ports["hecht"], {
            "HECHT_MEMBERS_MONGO_URI": f"{base}/{dbs['hecht']}", "KAFKA_BOOTSTRAP_SERVERS": lib.kafka_servers(),
            "HECHT_SIGNUP_RATE_LIMIT": str(10**9), "HECHT_METRICS_PORT": "0"}, run_tag),
        "baseline": start_server("baseline", "bench.baseline_app:create_app()", ports["baseline"], {
            "MONGO_URI": f"{base}/{dbs['baseline']}"}, run_tag),
    }
    runs: dict[str, list[dict]] = {"hecht": [], "baseline": []}
    try:
        for name, proc in procs.items():
            wait_healthy(proc, ports[name])
        create_region(ports["hecht"])
        for name in procs:
            warm_up(ports[name], first_serial=0)
        for r in range(size["rounds"]):
            if time.monotonic() - started > BUDGET_S:
                lib.log(f"time budget reached after {r} rounds")
                break
            order = ("hecht", "baseline") if r % 2 == 0 else ("baseline", "hecht")
            for name in order:
                serial = (r + 1) * size["concurrency"] * BLOCK
                result = measure(ports[name], size["seconds"], size["concurrency"], serial)
                runs[name].append(result)
                s = summarise([result])
                lib.log(f"round {r + 1} {name}: {s['rps']:.0f} sign-ups/s, p99 {s['p99_ms']:.1f} ms, "
                        f"errors {s['errors']}")
    finally:
        for proc in procs.values():
            proc.stop()
        lib.drop_databases(dbs.values())
    hecht, baseline = summarise(runs["hecht"]), summarise(runs["baseline"])
    # Each round measures both sides back to back, so its ratio shares the machine's load of
    # that moment; the median over rounds resists a neighbour's burst on a shared machine.
    ratios = [summarise([h])["rps"] / summarise([b])["rps"] for h, b in zip(runs["hecht"], runs["baseline"])
              if summarise([b])["rps"]]
    ratio = lib.median(ratios)
    wall = time.monotonic() - started
    print(f"sign-up throughput: hecht {hecht['rps']:.1f}/s vs baseline {baseline['rps']:.1f}/s "
          f"→ ratio {ratio:.2f} (median of rounds {', '.join(f'{r:.2f}' for r in ratios)}; target ≥ 0.5)")
    print(f"sign-up p99 latency: hecht {hecht['p99_ms']:.1f} ms vs baseline {baseline['p99_ms']:.1f} ms "
          f"(p50 {hecht['p50_ms']:.1f} vs {baseline['p50_ms']:.1f} ms); errors {hecht['errors']} / "
          f"{baseline['errors']}; {wall:.0f} s")
    notes = [f"gunicorn 2 sync workers each (no max_requests recycling), {size['concurrency']} client threads, "
             f"{size['rounds']} rounds × {size['seconds']:g} s per side, alternating order; app log level warning "
             "on both sides",
             "machine shared with the stack and the load generator; compare the ratio, not absolutes",
             "per sign-up hecht makes four round trips to the database where the baseline makes one: the shared "
             "rate-limit counter (hecht.web.rate_limit, find_one_and_update with upsert), then one multi-document "
             "transaction — insert the member (three unique indexes), insert its member.signed_up event into the "
             "outbox, commit (write concern majority; SecantusDB runs with --sync-on-commit, as for the "
             "baseline's insert)"]
    results = [
        lib.entry("sign-up throughput", "requests/s", hecht["rps"], baseline["rps"], TARGET, ratio=ratio,
                  note="ratio = median over rounds of hecht/baseline measured back to back",
                  round_ratios=[round(r, 3) for r in ratios]),
        lib.entry("sign-up p99 latency", "ms", hecht["p99_ms"], baseline["p99_ms"],
                  note="ratio = hecht / baseline; lower is better"),
    ]
    if hecht["errors"] or baseline["errors"]:
        notes.append(f"non-201/202 answers: hecht {hecht['statuses']}, baseline {baseline['statuses']}")
    lib.emit(results, notes, {"hecht": hecht, "baseline": baseline, "wall_s": round(wall, 1),
                              "machine": lib.machine()})


if __name__ == "__main__":
    main()
