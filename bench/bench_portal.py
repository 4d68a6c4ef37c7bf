"""Benchmark 13 — the portal's pages vs the API calls they make, side by side.

The members, agreements and notify services (gunicorn + workers) and the portal (gunicorn,
``services/portal``) run as real processes (bench/fleet.py), with their own databases. One
region, 20 active GPs and an agreement with an open mandate vote are seeded through the
APIs; each GP signs in through the portal's own magic-link flow (the development log shows
the link) and so holds a real session cookie.

Then, at 20 concurrent users (closed loop, the load generator in its own process), each GP
requesting with their own cookie or token:

- **member page** ``GET /r/{r}/membership``, beside its baseline: the API call the page
  makes, ``GET /v1/regions/{r}/members/{m}`` (members) with a GP token;
- **ballot page** ``GET /r/{r}/votes/{a}``, beside its baseline: the calls the page makes,
  ``GET /v1/regions/{r}/agreements/{a}`` then ``GET …/mandate/votes/{m}`` (agreements),
  sent one after the other and timed as one unit.

Rounds alternate (page first, then API first, …) and each condition's samples are pooled.
Target (issue 13): page p99 ≤ 1.5 × the p99 of its API calls. Not a test assertion.
Redirects are not followed: a page that answered with a redirect to the sign-in page would
count as a failure, not as a fast success.

Run: ``python bench/bench_portal.py --profile quick`` (against the stack in the environment).
"""
from __future__ import annotations

import re
import sys
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fleet as fl, lib, loadgen  # noqa: E402

USERS = 20
TARGET = "ratio <= 1.5"
SIZES = {"quick": {"rounds": 4, "count": 300, "max_s": 12.0},
         "full": {"rounds": 8, "count": 1000, "max_s": 40.0}}
R = "bench-portal"
REGION = {"id": R, "name": "Benchmark portal", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent", "Merelbeke"],
          "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}


def riziv(serial: int) -> str:
    n6 = 108000 + serial   # 1…: a physician
    return f"{n6}{97 - n6 % 97:02d}004"


def ok(r, *status):
    if r.status_code not in (status or (200,)):
        raise RuntimeError(f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}")
    return r.json() if r.content else {}


def seed(api: fl.Fleet) -> tuple[list[dict], str]:
    import requests
    m, a = api.urls["members"], api.urls["agreements"]
    platform = {"Authorization": f"Bearer {api.token('platform-admin')}"}
    admin = {"Authorization": f"Bearer {api.token('region-admin', R)}"}
    ok(requests.post(f"{m}/v1/regions", headers=platform, json=REGION, timeout=30), 201)
    gps = []
    for i in range(USERS):
        body = {"given_name": f"Bench{i}", "family_name": f"Portaal{i}", "email": f"bench{i}.{api.tag}@example.org",
                "language": "nl", "registration": {"scheme": "RIZIV", "number": riziv(i)},
                "practice": {"name": f"Praktijk {i}", "postcode": "9000", "municipality": "Gent"}}
        mid = ok(requests.post(f"{m}/v1/regions/{R}/members", json=body, headers=admin, timeout=30), 201)["id"]
        ok(requests.post(f"{m}/v1/regions/{R}/members/{mid}/approve", headers=admin, json={}, timeout=30))
        ok(requests.put(f"{m}/v1/regions/{R}/members/{mid}/capacity", headers=admin, timeout=30,
                        json={"status": "open", "since": date.today().isoformat(), "note": "welkom"}))
        gps.append({"id": mid, "email": body["email"]})
    # the agreements service learns the electorate from member events
    from hecht import mongo
    db = mongo.database(api.mongo_uri("agreements"), api.dbs["agreements"])
    ids = {g["id"] for g in gps}
    lib.wait_until(lambda: ids <= {d["_id"] for d in db["members_view"].find({"region_id": R, "status": "active"})},
                   timeout=90, what="the agreements service to see the GPs")
    agreement = ok(requests.post(f"{a}/v1/regions/{R}/agreements", headers=admin, timeout=30, json={
        "title": "Transmurale zorg", "theme": "frail-elderly", "summary": "Ontslag uit het ziekenhuis.",
        "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital"}, {"name": "Wit-Gele Kruis", "kind": "home-nursing"}],
        "commitments": [{"party": "AZ Sint-Lucas", "text": "Ontslagbrief binnen 24 uur."}],
        "municipalities": ["Gent"], "effective_from": (date.today() + timedelta(days=30)).isoformat(),
        "documents": [{"title": "Tekst", "url": "https://example.org/t.pdf"}]}), 201)
    ok(requests.post(f"{a}/v1/regions/{R}/agreements/{agreement['id']}/mandate", headers=admin, json={},
                     timeout=30), 200, 201)
    for g in gps[: USERS // 2]:   # half have voted: the ballot page shows a vote and turnout
        ok(requests.put(f"{a}/v1/regions/{R}/agreements/{agreement['id']}/mandate/votes/{g['id']}",
                        headers={"Authorization": f"Bearer {api.token('gp', R, g['id'])}"},
                        json={"choice": "for"}, timeout=30))
    return gps, agreement["id"]


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    if not m:
        raise RuntimeError("no CSRF token in the page")
    return m.group(1)


def sign_in(portal_url: str, log_path: Path, email: str) -> str:
    """The portal's own flow: ask for a link, read it from the development log, use it.
    Returns the session cookie's value."""
    import requests
    s = requests.Session()
    page = s.get(f"{portal_url}/sign-in", timeout=30)
    r = s.post(f"{portal_url}/sign-in", data={"csrf_token": csrf(page.text), "email": email, "next": ""},
               timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"POST /sign-in for {email}: {r.status_code}")
    # the link's host is HECHT_PORTAL_URL (not known before the port is): keep its token only
    rx = re.compile(rf"sign-in link for {re.escape(email)}: \S+/sign-in/([A-Za-z0-9_\-]+)")
    token = lib.wait_until(lambda: (rx.findall(log_path.read_text(errors="replace")) or [None])[-1], timeout=30,
                           what=f"the sign-in link for {email} in the portal's log")
    link = f"{portal_url}/sign-in/{token}"
    page = s.get(link, timeout=30)
    s.post(link, data={"csrf_token": csrf(page.text)}, timeout=30, allow_redirects=False)
    cookie = s.cookies.get("hecht_session")
    if not cookie:
        raise RuntimeError(f"no session cookie after signing in as {email}")
    return cookie


def measure(spec_by_condition: dict, rounds: int, count: int, max_s: float, users: int = USERS) -> dict[str, dict]:
    """Alternate the conditions round by round; pool each one's latencies."""
    pooled: dict[str, dict] = {c: {"records": [], "elapsed_s": 0.0} for c in spec_by_condition}
    names = list(spec_by_condition)
    for rnd in range(rounds):
        order = names if rnd % 2 == 0 else list(reversed(names))
        for c in order:
            spec = dict(spec_by_condition[c], mode="closed", concurrency=users, count=count, max_s=max_s,
                        allow_redirects=False, timeout_s=30)
            res = loadgen.run(spec, timeout=max_s + 60)
            pooled[c]["records"] += res["records"]
            pooled[c]["elapsed_s"] += res["elapsed_s"]
    return {c: loadgen.summarize(v) for c, v in pooled.items()}


def profile_page(portal: fl.Fleet, path: str, cookie: str, n: int = 60) -> dict:
    """Where a page's time goes inside the portal: the app in this process (same settings and
    database as the portal processes; the API calls still go over HTTP to the services),
    ``n`` requests under cProfile, top functions by cumulative time."""
    import cProfile
    import io
    import os
    import pstats
    for k, v in portal.env.items():
        if k.startswith(("HECHT_", "MONGO", "KAFKA")):
            os.environ[k] = v
    os.environ["HECHT_PORTAL_MONGO_URI"] = portal.mongo_uri("portal")
    from services.portal.app import create_app
    client = create_app().test_client()
    client.set_cookie("hecht_session", cookie)
    assert client.get(path).status_code == 200
    prof = cProfile.Profile()
    t = lib.Timer()
    prof.enable()
    for _ in range(n):
        client.get(path)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
    return {"path": path, "requests": n, "ms_per_request": round(t.elapsed() * 1000 / n, 1),
            "top_cumulative": out.getvalue()}


def start_fleets(api: fl.Fleet, portal: fl.Fleet, name: str) -> None:
    """The three services, then the portal pointed at them (plain http, links in its log,
    sign-in limits out of the way of a load test). The caller stops both."""
    lib.log(f"{name}: starting members, agreements, notify")
    api.start()
    lib.log(f"{name}: starting the portal")
    portal.start(services=("portal",), extra_env={
        "HECHT_MEMBERS_URL": api.urls["members"], "HECHT_AGREEMENTS_URL": api.urls["agreements"],
        "HECHT_NOTIFY_URL": api.urls["notify"], "HECHT_ENV": "development",
        "HECHT_LOG_LEVEL": "INFO", "HECHT_PORTAL_SIGNIN_LIMIT_CLIENT": "100000",
        "HECHT_PORTAL_SIGNIN_LIMIT_ADDRESS": "1000"})


def main() -> None:
    import requests
    profile = lib.profile_arg()
    size = SIZES[profile]
    tag = lib.tag()
    log_dir = lib.REPO / "var" / "bench" / f"portal-{tag}"
    api = fl.Fleet(tag=tag, prefix=f"bench{tag}.", log_dir=log_dir)
    portal = fl.Fleet(tag=f"{tag}p", prefix=f"bench{tag}p.", log_dir=log_dir)
    notes: list[str] = []
    try:
        start_fleets(api, portal, "bench_portal")
        purl = portal.urls["portal"]
        t = lib.Timer()
        gps, aid = seed(api)
        for g in gps:
            g["cookie"] = sign_in(purl, log_dir / "portal.log", g["email"])
            g["token"] = api.token("gp", R, g["id"])
        lib.log(f"bench_portal: seeded and signed in {len(gps)} GPs in {t.elapsed():.0f} s")
        # every page must answer 200 itself (not a redirect to the sign-in page)
        for g in gps[:3]:
            for path in (f"/r/{R}/membership", f"/r/{R}/votes/{aid}"):
                r = requests.get(f"{purl}{path}", cookies={"hecht_session": g["cookie"]}, allow_redirects=False,
                                 timeout=30)
                if r.status_code != 200:
                    raise RuntimeError(f"GET {path} as {g['email']}: {r.status_code}")
        m, a = api.urls["members"], api.urls["agreements"]
        cookie = lambda g: {"Cookie": f"hecht_session={g['cookie']}"}  # noqa: E731
        bearer = lambda g: {"Authorization": f"Bearer {g['token']}"}  # noqa: E731
        specs = {
            "member page": {"sequences": [[{"url": f"{purl}/r/{R}/membership", "headers": cookie(g)}] for g in gps]},
            "member page's API call": {"sequences": [[{"url": f"{m}/v1/regions/{R}/members/{g['id']}",
                                                      "headers": bearer(g)}] for g in gps]},
            "ballot page": {"sequences": [[{"url": f"{purl}/r/{R}/votes/{aid}", "headers": cookie(g)}] for g in gps]},
            "ballot page's API calls": {"sequences": [[
                {"url": f"{a}/v1/regions/{R}/agreements/{aid}", "headers": bearer(g)},
                {"url": f"{a}/v1/regions/{R}/agreements/{aid}/mandate/votes/{g['id']}", "headers": bearer(g)}]
                for g in gps]},
        }
        measure(specs, 1, USERS * 2, 5.0)   # warm-up: connections, caches, first renders
        stats = measure(specs, size["rounds"], size["count"], size["max_s"])
        # Why a ratio is what it is: the same requests one at a time (no queueing) give each
        # side's own service time; at 20 users two sync workers per process queue them.
        alone = measure(specs, 2, 40, 6.0, users=1)
        results = []
        for page, calls in (("member page", "member page's API call"), ("ballot page", "ballot page's API calls")):
            p, c = stats[page], stats[calls]
            results.append(lib.entry(f"portal: {page} p99 vs its API calls' p99, {USERS} users", "p99 ms",
                                     p["p99_ms"], c["p99_ms"], TARGET,
                                     note=f"p50 {p['p50_ms']:.0f} vs {c['p50_ms']:.0f} ms; "
                                          f"{p['throughput_rps']:.0f} vs {c['throughput_rps']:.0f} req/s; "
                                          f"statuses {p['statuses']} vs {c['statuses']}"))
            notes.append(f"{page} one user at a time: p50 {alone[page]['p50_ms']:.0f} ms, p99 "
                         f"{alone[page]['p99_ms']:.0f} ms; its API calls alone: p50 {alone[calls]['p50_ms']:.0f} ms, "
                         f"p99 {alone[calls]['p99_ms']:.0f} ms (the page's own cost is the difference: session "
                         f"read, token, the HTTP hop, rendering)")
            for name in (page, calls):
                bad = {k: v for k, v in stats[name]["statuses"].items() if k != "200"}
                if bad:
                    notes.append(f"{name}: answers other than 200: {bad}")
        notes.append(f"{size['rounds']} alternating rounds per condition, closed loop, {USERS} concurrent users "
                     f"(each with their own session cookie or GP token), 2 sync gunicorn workers per service "
                     f"and for the portal; the ballot page's baseline is its two agreements calls sent one "
                     f"after the other, timed as one unit")
        extra = {"stats": stats, "one_user": alone}
        try:
            extra["profile"] = profile_page(portal, f"/r/{R}/membership", gps[0]["cookie"])
            notes.append(f"profile: the member page in-process, {extra['profile']['ms_per_request']} ms a request "
                         "(see the profile below)")
        except Exception as e:  # noqa: BLE001 - the profile explains; it must not lose the figures
            notes.append(f"no profile: {e!r}")
        lib.emit(results, notes, extra)
    finally:
        portal.stop()
        api.stop()


if __name__ == "__main__":
    main()
