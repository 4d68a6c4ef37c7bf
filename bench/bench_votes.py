"""Benchmark — mandate votes: 1,000 electors voting at once, and tally reads with 10,000 votes recorded.

The agreements service runs under gunicorn (``deploy/gunicorn.conf.py``); a load generator in
its own process sends the requests over HTTP with real GP / region-admin tokens:

1. **votes**: one agreement whose electorate is 1,000 active GPs; every GP casts a vote
   (``PUT …/mandate/votes/{m}``) from ``CONCURRENCY`` client threads at once. Every vote is a
   commit on the same agreement (the ballot box, the tally and the ``agreement.vote_cast``
   event in one multi-document transaction, guarded by the agreement's sequence), so
   concurrent voters take turns: this measures that serialisation point.
   Afterwards the tally must count exactly 1,000 votes and the vote must have closed itself.
2. **tally**: another agreement with 10,000 votes recorded (seeded in-process through the
   repository in one commit, then checked) and an electorate of 10,001 so the vote stays
   open; ``GET …/mandate`` as region-admin from several threads.
3. **votes on the big box**: a few hundred votes on that agreement, to show what a
   10,000-entry ballot box costs a vote.

The run is bounded (``BUDGET_S``, well under 60 s). Run standalone against any stack::

    MONGO_URI=mongodb://127.0.0.1:27019 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19192 python bench/bench_votes.py

It prints the figures, then the ``BENCH_JSON`` line (bench/lib.py).
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

ELECTORS = 1_000
BIG_BOX = 10_000
CONCURRENCY = 32
TALLY_READS = 1_500
TALLY_THREADS = 8
BIG_BOX_VOTES = 150
BUDGET_S = 55.0
# gunicorn: one process with many threads lets concurrent votes share commits (group commit);
# BENCH_WORKERS / BENCH_THREADS try other shapes (processes collide with each other and retry).
WORKERS, THREADS = int(os.environ.get("BENCH_WORKERS", 1)), int(os.environ.get("BENCH_THREADS", 32))
REGION, BIG_REGION = "bench-votes", "bench-votes-big"


# -- the load generator (its own process) ---------------------------------------------------------
def load(port: int, jobs: list[tuple[str, str, str, bytes | None]], concurrency: int, deadline_s: float,
         results) -> None:
    """Send ``jobs`` (method, path, token, body) from ``concurrency`` threads; report latencies."""
    import http.client
    import queue
    import threading

    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + deadline_s

    def worker() -> None:
        mine, codes = [], {}
        while time.perf_counter() < stop_at:
            try:
                method, path, token, body = todo.get_nowait()
            except queue.Empty:
                break
            headers = {"Authorization": f"Bearer {token}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                code = resp.status
                conn.close()
            except Exception:  # noqa: BLE001 - counted as an error, not a crash
                code = 0
            mine.append(time.perf_counter() - started)
            codes[code] = codes.get(code, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({"latencies": latencies, "statuses": statuses, "elapsed": time.perf_counter() - began})


def measure(port: int, jobs, concurrency: int, deadline_s: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=load, args=(port, jobs, concurrency, deadline_s, q), daemon=True)
    p.start()
    out = q.get(timeout=deadline_s + 30)
    p.join(timeout=10)
    return out


def summarise(r: dict, ok: int = 200) -> dict:
    done = r["statuses"].get(ok, 0)
    return {"per_s": done / r["elapsed"] if r["elapsed"] else 0.0, "ok": done,
            "requests": sum(r["statuses"].values()), "errors": sum(r["statuses"].values()) - done,
            "statuses": {str(k): v for k, v in sorted(r["statuses"].items())},
            "p50_ms": 1000 * (lib.percentile(r["latencies"], 50) or 0),
            "p99_ms": 1000 * (lib.percentile(r["latencies"], 99) or 0), "elapsed_s": r["elapsed"]}


# -- set-up (in-process, straight into the service's database) ------------------------------------
def seed(db) -> tuple[str, str]:
    """The read model of two regions, an open vote on each; the big one with 10,000 votes recorded."""
    from services.agreements import domain, handlers
    from services.agreements.repository import AgreementRepository, ensure_indexes
    from hecht.web import ensure_platform_indexes
    ensure_platform_indexes(db)
    ensure_indexes(db)
    policy = {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}
    for region in (REGION, BIG_REGION):
        db.regions_view.insert_one({"_id": region, "name": region, "country": "BE", "municipalities": ["Gent"],
                                    "mandate_policy": policy, "sequence": 1})
    db.members_view.insert_many([{"_id": f"m_{i:05d}", "region_id": REGION, "status": "active", "sequence": 1}
                                 for i in range(ELECTORS)])
    db.members_view.insert_many([{"_id": f"b_{i:05d}", "region_id": BIG_REGION, "status": "active", "sequence": 1}
                                 for i in range(BIG_BOX + 1)])
    terms = domain.Terms(title="Benchmark agreement", theme="chronic-care",
                         partners=[{"name": "AZ Bench", "kind": "hospital"}],
                         commitments=[{"party": "region", "text": "vote"}], effective_from=lib_date())
    ids = []
    for region in (REGION, BIG_REGION):
        a = handlers.handle(domain.DraftAgreement(region, terms), db)
        handlers.handle(domain.OpenMandate(region, a.id), db)
        ids.append(a.id)
    # 10,000 votes recorded on the big one, in one commit (as 10,000 voters would leave it).
    repo = AgreementRepository(db)
    big = repo.get(ids[1], ballots=True)
    choices = ("for", "against", "abstain")
    big.ballots = {f"b_{i:05d}": choices[i % 3] for i in range(BIG_BOX)}
    big.mandate = big.mandate.counted(big.ballots)
    last = f"b_{BIG_BOX - 1:05d}"
    repo.commit(big, [domain.Event("agreement.vote_cast", big.event_data())], ballots=[(last, big.ballots[last])])
    check = repo.get(ids[1], ballots=True)
    assert check.mandate.tally.cast == BIG_BOX and len(check.ballots) == BIG_BOX, "seeding the big box failed"
    return ids[0], ids[1]


def lib_date():
    from datetime import date
    return date(2030, 1, 1)


def start_server(port: int, env: dict, run_tag: str) -> lib.Proc:
    argv = [str(lib.VENV_BIN / "gunicorn"), "-c", str(lib.REPO / "deploy" / "gunicorn.conf.py"),
            "services.agreements.app:create_app()"]
    env = {**os.environ, **env, "HECHT_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(WORKERS),
           "GUNICORN_THREADS": str(THREADS), "GUNICORN_MAX_REQUESTS": "0", "HECHT_LOG_LEVEL": "warning"}
    return lib.Proc("agreements", argv, env,
                    lib.REPO / "var" / "bench" / f"votes-{run_tag}" / "agreements.log").start()


def wait_healthy(proc: lib.Proc, port: int) -> None:
    import http.client

    def up():
        if not proc.alive():
            raise RuntimeError(f"gunicorn exited:\n{proc.tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    lib.wait_until(up, timeout=20, what="gunicorn to answer /healthz")


def main() -> None:
    started = time.monotonic()
    run_tag = lib.tag()
    db_name = f"bench_{run_tag}_agreements"
    os.environ["HECHT_AGREEMENTS_MONGO_URI"] = f"{lib.mongo_base()}/{db_name}"
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = lib.kafka_servers()
    lib.quiet_logs()
    from hecht import mongo
    from hecht.auth import mint
    from hecht.config import settings
    from services.agreements.repository import AgreementRepository
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)
    port = lib.free_port()
    proc = start_server(port, {"HECHT_AGREEMENTS_MONGO_URI": s.mongo_uri, "HECHT_METRICS_PORT": "0"}, run_tag)
    try:
        t = time.monotonic()
        small, big = seed(db)
        seed_s = time.monotonic() - t
        lib.log(f"seeded in {seed_s:.1f} s: {ELECTORS} electors on {small}, {BIG_BOX} votes on {big}")
        wait_healthy(proc, port)
        admin = mint(s, roles=["region-admin"], region=BIG_REGION, ttl=600)
        # warm-up: every worker builds its client and indexes (not measured)
        measure(port, [("GET", f"/v1/regions/{BIG_REGION}/agreements/{big}/mandate", admin, None)] * 40, 8, 20)

        choices = ("for", "against", "abstain")
        vote_jobs = [("PUT", f"/v1/regions/{REGION}/agreements/{small}/mandate/votes/m_{i:05d}",
                      mint(s, roles=["gp"], region=REGION, member=f"m_{i:05d}", ttl=600),
                      json.dumps({"choice": choices[i % 3]}).encode()) for i in range(ELECTORS)]
        votes = summarise(measure(port, vote_jobs, CONCURRENCY, max(5.0, BUDGET_S - (time.monotonic() - started)
                                                                    - 20)))
        lib.log(f"votes: {votes['per_s']:.0f}/s, p50 {votes['p50_ms']:.0f} ms, p99 {votes['p99_ms']:.0f} ms, "
                f"{votes['statuses']}")
        final = AgreementRepository(db).get(small, ballots=True)
        counted = final.mandate.tally.cast
        lost = ELECTORS - counted if votes["ok"] == ELECTORS else None

        tally_jobs = [("GET", f"/v1/regions/{BIG_REGION}/agreements/{big}/mandate", admin, None)] * TALLY_READS
        tally = summarise(measure(port, tally_jobs, TALLY_THREADS,
                                  max(3.0, BUDGET_S - (time.monotonic() - started) - 8)))
        lib.log(f"tally reads with {BIG_BOX} votes: {tally['per_s']:.0f}/s, p50 {tally['p50_ms']:.1f} ms, "
                f"p99 {tally['p99_ms']:.1f} ms")

        big_jobs = [("PUT", f"/v1/regions/{BIG_REGION}/agreements/{big}/mandate/votes/b_{i:05d}",
                     mint(s, roles=["gp"], region=BIG_REGION, member=f"b_{i:05d}", ttl=600),
                     json.dumps({"choice": "for"}).encode()) for i in range(BIG_BOX_VOTES)]
        big_votes = summarise(measure(port, big_jobs, 8, max(2.0, BUDGET_S - (time.monotonic() - started))))
        lib.log(f"votes on the 10,000-vote box: {big_votes['per_s']:.0f}/s, p99 {big_votes['p99_ms']:.0f} ms")
    finally:
        proc.stop()
        lib.drop_databases([db_name])
    wall = time.monotonic() - started
    print(f"votes: {ELECTORS} electors, {CONCURRENCY} concurrent clients → {votes['per_s']:.0f} votes/s, "
          f"p50 {votes['p50_ms']:.0f} ms, p99 {votes['p99_ms']:.0f} ms; answers {votes['statuses']}; "
          f"tally counts {counted} (vote {final.status}, closed: {final.mandate.close_reason})")
    print(f"tally read with {BIG_BOX} votes recorded: p50 {tally['p50_ms']:.1f} ms, p99 {tally['p99_ms']:.1f} ms, "
          f"{tally['per_s']:.0f} reads/s ({TALLY_THREADS} clients)")
    print(f"votes on that 10,000-vote agreement: {big_votes['per_s']:.0f}/s, p99 {big_votes['p99_ms']:.0f} ms "
          f"({big_votes['statuses']}); wall {wall:.0f} s")
    notes = [f"gunicorn {WORKERS} sync workers × {THREADS} threads, SecantusDB (--sync-on-commit) and the load "
             "generator on the same machine; log level warning",
             "every vote is one commit on its agreement (ballot box + tally + agreement.vote_cast event in one "
             "transaction; the votes that arrive while a commit is in flight share the next one), so votes on one "
             "agreement are serialised: votes/s is that turn-taking, not a per-request cost; the whole ballot box "
             "is rewritten by each commit",
             f"the {BIG_BOX} recorded votes were seeded in-process through the repository in one commit"]
    results = [
        lib.entry("concurrent votes throughput", "votes/s", votes["per_s"], note=f"{ELECTORS} electors, "
                  f"{CONCURRENCY} clients"),
        lib.entry("concurrent votes p99 latency", "ms", votes["p99_ms"]),
        lib.entry("tally read p99 latency (10,000 votes recorded)", "ms", tally["p99_ms"]),
        lib.entry("vote p99 latency (10,000 votes recorded)", "ms", big_votes["p99_ms"]),
    ]
    lib.emit(results, notes, {"votes": votes, "tally": tally, "big_box_votes": big_votes, "counted": counted,
                              "lost_votes": lost, "seed_s": round(seed_s, 1), "wall_s": round(wall, 1),
                              "machine": lib.machine()})


if __name__ == "__main__":
    main()
