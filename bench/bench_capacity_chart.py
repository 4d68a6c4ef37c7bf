"""Benchmark 14 — the console's capacity chart of a region with a year of daily history,
beside the API call the page makes.

The members, agreements and notify services (gunicorn + workers) and the portal (gunicorn,
``services/portal``) run as real processes (bench/fleet.py), each with its own databases.
One region with several municipalities is created through the API; a year (365 days) of
daily capacity snapshots is backfilled straight into the members database, in the shape
docs/PORTAL.md gives (``{region_id, day, municipalities: [{municipality, open, limited,
closed, unknown}]}``) through the members repository's snapshot function when there is one
(else as documents of that shape). A region-admin staff account is invited through the API
and signs in through the portal's own magic-link flow (the development log shows the link),
so the page is fetched with a real session cookie.

Then, at a modest concurrency (5 users; also 2, as many as the portal has workers, and one
at a time; closed loop, the load generator in its own process):

- **capacity page** ``GET /admin/{r}/capacity?from=…&to=…`` (the whole year: a
  server-rendered SVG chart and the accessible table beside it), beside its baseline:
- the API call it makes, ``GET /v1/regions/{r}/capacity/history?from=…&to=…`` (members)
  with a region-admin token (the page also reads the region, ``GET /v1/regions/{r}``, a
  small document; it is not in the baseline, which is the history call the chart is drawn
  from).

Rounds alternate (page first, then API first, …) and each condition's samples are pooled.
Target (issue 14): page p99 < 1 s (absolute); the ratio to the API call's p99 is reported
beside it. Not a test assertion. Redirects are not followed: a page that answered with a
redirect to the sign-in page would count as a failure, not as a fast success.

Run: ``python bench/bench_capacity_chart.py --profile quick`` (against the stack in the
environment), or ``scripts/bench.sh quick --only capacity``.
"""
from __future__ import annotations

import random
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fleet as fl, lib  # noqa: E402
from bench.bench_portal import measure, ok, profile_page, sign_in, start_fleets  # noqa: E402

USERS = 5
DAYS = 365
TARGET = "value < 1000"
SIZES = {"quick": {"rounds": 4, "count": 60, "max_s": 15.0},
         "full": {"rounds": 8, "count": 200, "max_s": 45.0}}
R = "bench-capacity"
MUNICIPALITIES = ["Gent", "Merelbeke", "Melle", "Destelbergen", "Lochristi", "De Pinte", "Sint-Martens-Latem",
                  "Oosterzele"]
REGION = {"id": R, "name": "Benchmark capaciteit", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": MUNICIPALITIES,
          "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}
ADMIN_EMAIL = "coordinator.{tag}@bench.example.org"


def history(days: int, today: date) -> list[dict]:
    """A year of plausible daily counts per municipality (a random walk, seeded: every run
    charts the same data)."""
    rnd = random.Random(14)
    state = {m: [rnd.randint(5, 30), rnd.randint(0, 10), rnd.randint(0, 8), rnd.randint(0, 3)]
             for m in MUNICIPALITIES}
    out = []
    for i in range(days):
        day = today - timedelta(days=days - 1 - i)
        rows = []
        for m in MUNICIPALITIES:
            s = state[m]
            for k in range(4):
                s[k] = max(0, s[k] + rnd.choice((-1, 0, 0, 0, 1)))
            rows.append({"municipality": m, "open": s[0], "limited": s[1], "closed": s[2], "unknown": s[3]})
        out.append({"region_id": R, "day": day.isoformat(), "municipalities": rows})
    return out


def backfill(api: fl.Fleet, days: list[dict]) -> str:
    """Write the snapshots into the members database with the members repository's
    ``write_snapshots`` (one bulk write); documents of the documented shape when it is not
    there. Returns how (for the notes)."""
    from hecht import mongo
    db = mongo.database(api.mongo_uri("members"), api.dbs["members"])
    try:
        from services.members.repository import write_snapshots
    except ImportError:
        write_snapshots = None
    if write_snapshots is not None:
        n = write_snapshots(db, R, [(date.fromisoformat(d["day"]), d["municipalities"]) for d in days])
        return f"services.members.repository.write_snapshots, {n} days"
    now = datetime.now(timezone.utc)
    db["capacity_snapshots"].insert_many([{"_id": f"{d['region_id']}:{d['day']}", **d, "taken_at": now}
                                          for d in days])
    return f"{len(days)} documents of the documented shape inserted into capacity_snapshots"


def main() -> None:
    import requests
    profile = lib.profile_arg()
    size = SIZES[profile]
    tag = lib.tag()
    log_dir = lib.REPO / "var" / "bench" / f"capacity-{tag}"
    api = fl.Fleet(tag=tag, prefix=f"bench{tag}.", log_dir=log_dir)
    portal = fl.Fleet(tag=f"{tag}p", prefix=f"bench{tag}p.", log_dir=log_dir)
    notes: list[str] = []
    try:
        start_fleets(api, portal, "bench_capacity_chart")
        purl, m = portal.urls["portal"], api.urls["members"]
        platform = {"Authorization": f"Bearer {api.token('platform-admin')}"}
        ok(requests.post(f"{m}/v1/regions", headers=platform, json=REGION, timeout=30), 201)
        today = date.today()
        days = history(DAYS, today)
        t = lib.Timer()
        how = backfill(api, days)
        lib.log(f"bench_capacity_chart: backfilled {how} in {t.elapsed():.1f} s")
        frm, to = days[0]["day"], days[-1]["day"]
        admin_token = api.token("region-admin", R)
        bearer = {"Authorization": f"Bearer {admin_token}"}
        hist = ok(requests.get(f"{m}/v1/regions/{R}/capacity/history", params={"from": frm, "to": to},
                               headers=bearer, timeout=30))
        if len(hist.get("days") or []) != DAYS:
            raise RuntimeError(f"the history call answers {len(hist.get('days') or [])} days, not {DAYS}: "
                               f"the backfill ({how}) is not what the service reads")
        email = ADMIN_EMAIL.format(tag=tag)
        ok(requests.post(f"{m}/v1/staff", headers=platform, timeout=30,
                         json={"email": email, "name": "Bench Coördinator", "language": "nl",
                               "platform_admin": False, "admin_of": [R]}), 201)
        cookie = sign_in(purl, log_dir / "portal.log", email)
        page_path = f"/admin/{R}/capacity?from={frm}&to={to}"
        r = requests.get(f"{purl}{page_path}", cookies={"hecht_session": cookie}, allow_redirects=False, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"GET {page_path}: {r.status_code} {r.text[:300]}")
        if "<svg" not in r.text:
            raise RuntimeError(f"GET {page_path}: no SVG chart in the page")
        rows = r.text.count("<tr")
        notes.append(f"the page: {len(r.content) / 1024:.0f} KiB of HTML, {rows} table rows, "
                     f"{r.text.count('<path') + r.text.count('<polyline')} SVG paths/polylines")
        specs = {
            "capacity page": {"sequences": [[{"url": f"{purl}{page_path}",
                                              "headers": {"Cookie": f"hecht_session={cookie}"}}]]},
            "capacity page's API call": {"sequences": [[{
                "url": f"{m}/v1/regions/{R}/capacity/history?from={frm}&to={to}", "headers": bearer}]]},
        }
        measure(specs, 1, USERS * 2, 8.0, users=USERS)   # warm-up
        stats = measure(specs, size["rounds"], size["count"], size["max_s"], users=USERS)
        # The same at 2 users (as many as the portal has workers: no queueing in front of
        # them) and one request at a time (each side's own service time).
        two = measure(specs, 2, 40, 10.0, users=2)
        alone = measure(specs, 2, 15, 10.0, users=1)
        results = []
        for users, st in ((USERS, stats), (2, two)):
            p, c = st["capacity page"], st["capacity page's API call"]
            results.append(lib.entry(
                f"console: capacity page p99, {DAYS} days × {len(MUNICIPALITIES)} municipalities, {users} users",
                "p99 ms", p["p99_ms"], c["p99_ms"], TARGET,
                note=f"p50 {p['p50_ms']:.0f} vs {c['p50_ms']:.0f} ms; {p['throughput_rps']:.1f} vs "
                     f"{c['throughput_rps']:.1f} req/s; statuses {p['statuses']} vs {c['statuses']}"))
        ap, ac = alone["capacity page"], alone["capacity page's API call"]
        notes.append(f"capacity page one request at a time: p50 {ap['p50_ms']:.0f} ms, p99 {ap['p99_ms']:.0f} ms; "
                     f"its API call alone: p50 {ac['p50_ms']:.0f} ms, p99 {ac['p99_ms']:.0f} ms")
        for name in stats:
            bad = {k: v for k, v in stats[name]["statuses"].items() if k != "200"}
            if bad:
                notes.append(f"{name}: answers other than 200: {bad}")
        notes.append(f"{size['rounds']} alternating rounds per condition, closed loop, {USERS} concurrent users "
                     f"(one staff session / one region-admin token), 2 sync gunicorn workers per service and "
                     f"for the portal; history backfilled: {how}")
        extra = {"stats": stats, "two_users": two, "one_user": alone, "days": DAYS,
                 "municipalities": len(MUNICIPALITIES)}
        try:   # where the page's own time goes (the API call still goes over HTTP to members)
            extra["profile"] = profile_page(portal, page_path, cookie, n=20)
            notes.append(f"profile: the capacity page in-process, {extra['profile']['ms_per_request']} ms a request "
                         "(see the profile below)")
        except Exception as e:  # noqa: BLE001 - the profile explains; it must not lose the figures
            notes.append(f"no profile: {e!r}")
        lib.emit(results, notes, extra)
    finally:
        portal.stop()
        api.stop()


if __name__ == "__main__":
    main()
