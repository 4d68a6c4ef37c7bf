"""Benchmark 4 — end to end: HTTP commit → webhook received, at a steady request rate.

The members and notify services run as real processes (gunicorn + ``hecht worker``). An
integrator subscription in notify points at a receiver process (``bench/receiver.py``).
The load generator (its own process) sends public GP sign-ups at a steady rate
(100/s; 60 s in the full profile, 15 s in the quick one). Each sign-up commits a member
and its ``member.signed_up`` event in one write; the members relay publishes it, notify's
consumer matches the subscription, and its delivery engine POSTs the signed CloudEvent.

Latency = webhook arrival − the moment the request was *due* (open loop: a server that
falls behind is charged its queueing). Target: p99 < 1 s. A first phase at a low rate
(5/s) shows the latency below saturation; the load generator stops a phase early once the
service is more than 3 s behind (the rate is then not sustainable, and said so). Webhooks
still missing after the wait count as at least that late (p99 becomes a lower bound).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fleet as fl, lib, loadgen  # noqa: E402

SIZES = {"quick": {"rate": 100, "duration_s": 15, "warmup": 20, "low": (5, 10), "wait_s": 20},
         "full": {"rate": 100, "duration_s": 60, "warmup": 50, "low": (5, 30), "wait_s": 60}}
REGION = {"id": "bench-e2e", "name": "Benchmark ELZ", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent", "Merelbeke", "Melle"]}
SIGNUP = ('{"given_name": "Bench{i}", "family_name": "Peeters", "email": "b{uniq}-{i}@bench.example", '
          '"language": "nl", "registration": {"scheme": "RIZIV", "number": "{riziv}"}, '
          '"practice": {"name": "Praktijk {i}", "postcode": "9000", "municipality": "Gent"}}')
TARGET = "value < 1000"
EVENT_TYPE = "hecht.member.signed_up.v1"


def received(url: str) -> dict[str, float]:
    import requests
    recs = requests.get(f"{url}/_stats", timeout=10).json()["records"]
    out: dict[str, float] = {}
    for arrived, _wid, subject, etype, _path in recs:
        if etype == EVENT_TYPE and subject and subject not in out:
            out[subject] = arrived
    return out


def setup(fleet: fl.Fleet, receiver_url: str) -> None:
    import requests
    admin = {"Authorization": f"Bearer {fleet.token('platform-admin')}"}
    r = requests.post(f"{fleet.urls['members']}/v1/regions", json=REGION, headers=admin, timeout=30)
    if r.status_code not in (201, 409):
        raise RuntimeError(f"creating the region: {r.status_code} {r.text[:300]}")
    integrator = {"Authorization": f"Bearer {fleet.token('integrator', REGION['id'])}"}
    body = {"url": f"{receiver_url}/hook", "event_types": ["member.*"], "description": "bench e2e"}
    lib.wait_until(lambda: requests.post(f"{fleet.urls['notify']}/v1/regions/{REGION['id']}/subscriptions",
                                         json=body, headers=integrator, timeout=30).status_code == 201,
                   timeout=60, interval=1, what="the subscription to be created")


def signups(fleet: fl.Fleet, **spec) -> dict:
    return loadgen.run({"method": "POST", "url": f"{fleet.urls['members']}/v1/regions/{REGION['id']}/members",
                        "body": SIGNUP, "id_field": "id", **spec}, timeout=600)


def phase(fleet: fl.Fleet, url: str, rate: float, duration_s: float, base: int, wait_s: float) -> dict:
    """One steady phase: sign-ups at ``rate``/s, then wait up to ``wait_s`` for their webhooks."""
    res = signups(fleet, mode="rate", rate=rate, duration_s=duration_s, threads=48, base=base,
                  max_backlog=int(rate * 3))  # more than 3 s behind: the rate is not sustainable
    sent = {r[3]: r[0] for r in res["records"] if r[3]}
    deadline = time.monotonic() + wait_s
    got = received(url)
    while time.monotonic() < deadline and not set(sent) <= set(got):
        time.sleep(0.5)
        got = received(url)
    waited_until = time.monotonic()
    lat = [(got[i] - t0) * 1000 for i, t0 in sent.items() if i in got]
    # A webhook that never came counts as at least as late as our wait: p99 is then a lower bound.
    bounded = lat + [(waited_until - t0) * 1000 for i, t0 in sent.items() if i not in got]
    http = loadgen.summarize(res)
    return {"rate": rate, "duration_s": duration_s, "sent": len(sent), "received": len(lat),
            "lost": len(sent) - len(lat), "http": http, "aborted_at": res.get("aborted_at"),
            "planned": res.get("planned"), "lat": lat,
            "p50": lib.percentile(bounded, 50), "p99": lib.percentile(bounded, 99),
            "timeline": sorted([[round(t0 - min(sent.values()), 3), round((got[i] - t0) * 1000, 1)]
                                for i, t0 in sent.items() if i in got]) if sent else []}


def describe(ph: dict) -> str:
    http = ph["http"]
    text = (f"{ph['planned']} sign-ups planned at {ph['rate']:g}/s for {ph['duration_s']:g} s; "
            f"{http['requests']} sent, {http['ok']} accepted (achieved {http['throughput_rps'] or 0:.1f}/s, "
            f"HTTP p50 {lib._round(http['p50_ms'], 0)} ms, p99 {lib._round(http['p99_ms'], 0)} ms); "
            f"{ph['received']} webhooks")
    if ph["aborted_at"] is not None:
        text += (f"; the load generator stopped after {ph['aborted_at']} requests: the service fell more than "
                 "3 s behind (the rate is not sustainable)")
    if ph["lost"]:
        text += f"; {ph['lost']} webhooks not received in time (p99 is a lower bound)"
    return text


def run(fleet: fl.Fleet, profile: str) -> tuple[list[dict], list[str], dict]:
    size = SIZES[profile]
    missing = [s for s in ("members", "notify") if s not in fleet.urls]
    if missing:
        return [], [f"not available: services {', '.join(missing)} missing"], {"unavailable": missing}
    port = lib.free_port()
    receiver = lib.Proc("receiver", [sys.executable, "-m", "bench.receiver", str(port)], dict(fleet.env or {}),
                        (fleet.log_dir or lib.REPO / "var" / "bench") / "receiver.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        lib.wait_until(lambda: __import__("requests").get(f"{url}/_count", timeout=1).ok, timeout=20,
                       what="the receiver")
        setup(fleet, url)
        lib.log(f"e2e: warm-up, {size['warmup']} sign-ups")
        warm = signups(fleet, mode="closed", count=size["warmup"], concurrency=2, base=100000)
        ids = [r[3] for r in warm["records"] if r[3]]
        if not ids:
            raise RuntimeError(f"the warm-up sign-ups failed: {loadgen.summarize(warm)['statuses']}")
        lib.wait_until(lambda: set(ids) <= set(received(url)), timeout=90, interval=0.5,
                       what="the warm-up webhooks")
        low_rate, low_s = size["low"]
        lib.log(f"e2e: {low_rate} sign-ups/s for {low_s} s (below saturation)")
        low = phase(fleet, url, low_rate, low_s, 105000, size["wait_s"])  # RIZIV: physicians' numbers start with 1
        lib.log(f"e2e: {size['rate']} sign-ups/s for {size['duration_s']} s")
        high = phase(fleet, url, size["rate"], size["duration_s"], 110000, size["wait_s"])
        for ph in (low, high):
            lib.log(f"  {ph['rate']:g}/s: p50 {lib._round(ph['p50'], 0)} ms, p99 {lib._round(ph['p99'], 0)} ms; "
                    + describe(ph))
        results = [
            lib.entry(f"e2e: sign-up → webhook p99 at {size['rate']}/s", "ms", high["p99"], None, TARGET,
                      note=describe(high)),
            lib.entry(f"e2e: sign-up → webhook p50 at {size['rate']}/s", "ms", high["p50"], None, None),
            lib.entry(f"e2e: sign-up → webhook p99 at {low_rate}/s", "ms", low["p99"], None, TARGET,
                      note=describe(low)),
            lib.entry(f"e2e: sign-up → webhook p50 at {low_rate}/s", "ms", low["p50"], None, None),
        ]
        for row, ph in ((results[0], high), (results[2], low)):
            if ph["lost"] or not ph["sent"] or ph["aborted_at"] is not None:
                row["met"] = False
        notes = []
        if high["aborted_at"] is not None or high["http"]["throughput_rps"] < 0.9 * size["rate"]:
            notes.append(f"{size['rate']} sign-ups/s is beyond what this machine sustains "
                         f"(achieved {high['http']['throughput_rps']:.1f}/s); see the CPU seconds per process")
        extra = {"latency_ms_quantiles": lib.quantiles(high["lat"]),
                 "latency_ms_quantiles_low": lib.quantiles(low["lat"]),
                 "http": high["http"], "http_low": low["http"], "timeline": high["timeline"],
                 "phases": {str(ph["rate"]): {k: v for k, v in ph.items() if k not in ("lat", "timeline")}
                            for ph in (low, high)}}
        return results, notes, extra
    finally:
        receiver.stop()


def main() -> None:
    profile = lib.profile_arg()
    lib.quiet_logs()
    with fl.own_fleet(("members", "notify")) as fleet:
        results, notes, extra = run(fleet, profile)
    lib.emit(results, notes, extra)


if __name__ == "__main__":
    main()
