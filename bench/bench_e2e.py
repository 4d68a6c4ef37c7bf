"""Benchmark 4 — end to end: HTTP commit → webhook received, at the highest rate the machine sustains.

The members and notify services run as real processes (gunicorn + ``hecht worker``). An
integrator subscription in notify points at a receiver process (``bench/receiver.py``).
The load generator (its own process) sends public GP sign-ups at a steady rate. Each
sign-up commits a member and its ``member.signed_up`` event in one transaction; the members
relay follows the outbox's change stream and publishes it, notify's consumer matches the
subscription, and its delivery engine POSTs the signed CloudEvent.

Latency = webhook arrival − the moment the request was *due* (open loop: a server that
falls behind is charged its queueing). The rate climbs a ladder of steps (``SIZES``: 5 to
100/s, 8 s each in the quick profile, 30 s in the full one). A step is **sustained** when every
sign-up was sent on time and accepted, every webhook arrived and the p99 is under 1 s
(issue 12: "sign-up → webhook p99 < 1 s at the highest rate the machine sustains; aim for
100/s"). The ladder stops at the first step that is not (a failed step is measured once
more after its backlog drained, once per run: the machine is shared); if time allows one
more step between the last sustained rate and that one narrows the answer. The load
generator stops a step early once the service is more than 3 s behind. Webhooks still
missing after the wait count as at least that late (p99 is then a lower bound). Before the
ladder the server's CPU cost of one retryable and one non-retryable ``insert_one`` is
measured and reported (see ``server_write_cost``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fleet as fl, lib, loadgen  # noqa: E402

SIZES = {"quick": {"rates": [5, 10, 15, 20, 30, 40, 50, 70, 100], "step_s": 8, "warmup": 20, "wait_s": 10,
                   "drain_s": 30, "budget_s": 170},
         "full": {"rates": [5, 10, 15, 20, 30, 40, 50, 60, 75, 90, 100, 125], "step_s": 30, "warmup": 50,
                  "wait_s": 30, "drain_s": 90, "budget_s": 1300}}
AIM = 100
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
                        "body": SIGNUP, "id_field": "id", **spec,
                        # the region's admin: the only caller told the new member's id (issue 22)
                        "headers": {"Authorization": f"Bearer {fleet.token('region-admin', REGION['id'])}"}},
                       timeout=600)


def phase(fleet: fl.Fleet, url: str, rate: float, duration_s: float, base: int, wait_s: float) -> dict:
    """One steady step: sign-ups at ``rate``/s, then wait up to ``wait_s`` for their webhooks."""
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
    ph = {"rate": rate, "duration_s": duration_s, "sent": len(sent), "received": len(lat),
          "lost": len(sent) - len(lat), "http": http, "aborted_at": res.get("aborted_at"),
          "planned": res.get("planned"), "lat": lat, "missing_ids": [i for i in sent if i not in got],
          "p50": lib.percentile(bounded, 50), "p99": lib.percentile(bounded, 99),
          "timeline": sorted([[round(t0 - min(sent.values()), 3), round((got[i] - t0) * 1000, 1)]
                              for i, t0 in sent.items() if i in got]) if sent else []}
    ph["why_not"] = why_not(ph)
    ph["sustained"] = not ph["why_not"]
    return ph


def why_not(ph: dict) -> str:
    """Empty if the step was sustained; else the reasons."""
    reasons = []
    if ph["aborted_at"] is not None:
        reasons.append(f"the load generator fell more than 3 s behind after {ph['aborted_at']} requests")
    if ph["http"]["ok"] < (ph["planned"] or 0):
        reasons.append(f"{ph['http']['ok']} of {ph['planned']} sign-ups accepted ({ph['http']['statuses']})")
    if ph["lost"]:
        reasons.append(f"{ph['lost']} webhooks not received within the wait")
    if ph["p99"] is None or ph["p99"] >= 1000:
        reasons.append(f"p99 {lib._round(ph['p99'], 0)} ms ≥ 1 s")
    return "; ".join(reasons)


def describe(ph: dict) -> str:
    http = ph["http"]
    text = (f"{ph['planned']} sign-ups planned at {ph['rate']:g}/s for {ph['duration_s']:g} s; "
            f"{http['requests']} sent, {http['ok']} accepted (HTTP p50 {lib._round(http['p50_ms'], 0)} ms, "
            f"p99 {lib._round(http['p99_ms'], 0)} ms); {ph['received']} webhooks, "
            f"p50 {lib._round(ph['p50'], 0)} ms, p99 {lib._round(ph['p99'], 0)} ms")
    if ph["why_not"]:
        text += f" — not sustained: {ph['why_not']}"
    return text


def drain(url: str, ids: list[str], limit_s: float) -> float:
    """Wait (at most ``limit_s``) for the webhooks a failed step left behind; seconds waited."""
    t = lib.Timer()
    time.sleep(2)  # the queues behind the webhooks (relay, consumer, delivery engine) settle too
    while ids and t.elapsed() < limit_s and not set(ids) <= set(received(url)):
        time.sleep(1)
    return t.elapsed()


def server_write_cost(n: int = 100) -> dict | None:
    """Server CPU ms per ``insert_one``, as a retryable write (what the services send) and not,
    in a scratch database (pid file of the stack's database server; None without one).

    SecantusDB 0.7.0b3 keeps a record of every retryable write for 30 minutes (at most 10,000)
    and scans that table, under one lock, on every retryable write
    (``transactions._prune_retryable_locked``): the cost of a write depends on how many
    retryable writes the server took in the last half hour, this run's earlier benchmarks
    included. Measured here so that the end-to-end figure can be read against it.
    """
    import os
    import uuid
    import pymongo
    try:
        pid = int(Path(os.environ["HECHT_STACK_DIR"], "mongo", "pid").read_text().strip())
    except (KeyError, OSError, ValueError):
        return None

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    name = f"hecht_bench_probe_{uuid.uuid4().hex[:8]}"
    out = {}
    try:
        for label, retry in (("retryable", True), ("not_retryable", False)):
            client = pymongo.MongoClient(lib.mongo_base(), retryWrites=retry)
            try:
                coll = client[name][label]
                coll.insert_one({"warm": True})
                before, t = cpu(), lib.Timer()
                for i in range(n):
                    coll.insert_one({"i": i})
                out[f"{label}_cpu_ms"] = round((cpu() - before) / n * 1000, 2)
                out[f"{label}_wall_ms"] = round(t.elapsed() / n * 1000, 2)
            finally:
                client.close()
    except (OSError, ValueError, pymongo.errors.PyMongoError):
        return None
    finally:
        lib.drop_databases([name])
    return out


def run(fleet: fl.Fleet, profile: str) -> tuple[list[dict], list[str], dict]:
    size = SIZES[profile]
    missing = [s for s in ("members", "notify") if s not in fleet.urls]
    if missing:
        return [], [f"not available: services {', '.join(missing)} missing"], {"unavailable": missing}
    started = lib.Timer()
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
        probe = server_write_cost()
        if probe:
            lib.log(f"e2e: server CPU per insert_one: retryable {probe['retryable_cpu_ms']} ms, "
                    f"not retryable {probe['not_retryable_cpu_ms']} ms")
        steps: list[dict] = []
        step_cost = size["step_s"] + size["wait_s"]

        def step(rate: float) -> dict:
            base = 105000 + 5000 * len(steps)  # RIZIV: physicians' numbers start with 1
            lib.log(f"e2e: {rate:g} sign-ups/s for {size['step_s']} s")
            ph = phase(fleet, url, rate, size["step_s"], base, size["wait_s"])
            lib.log(f"  {describe(ph)}")
            steps.append(ph)
            return ph

        best, failed, retried = None, None, []

        def room_for_a_drained_step() -> bool:
            return started.elapsed() + size["drain_s"] + step_cost <= size["budget_s"]

        def step_after_drain(previous: dict, rate: float, why: str) -> dict:
            """``step(rate)`` once the backlog ``previous`` left has arrived (or drain_s passed)."""
            waited = drain(url, previous["missing_ids"], size["drain_s"])
            lib.log(f"e2e: {why}; after {waited:.0f} s of draining, {rate:g}/s")
            return step(rate)

        for rate in size["rates"]:
            if steps and started.elapsed() + step_cost > size["budget_s"]:
                lib.log("e2e: time budget reached")
                break
            ph = step(rate)
            if not ph["sustained"] and not retried and room_for_a_drained_step():
                # Once per run, a failed step is measured again after its backlog has drained: a
                # neighbour's burst on the shared machine must not decide the answer alone.
                retried.append(ph)
                ph = step_after_drain(ph, rate, f"{rate:g}/s not sustained ({ph['why_not']}), again")
            if ph["sustained"]:
                best = ph
            else:
                failed = ph
                break
        # One step between the last sustained rate and the first that was not, if time allows.
        if best is not None and failed is not None and failed["rate"] - best["rate"] >= 10:
            mid = round((best["rate"] + failed["rate"]) / 2 / 5) * 5
            if best["rate"] < mid < failed["rate"] and room_for_a_drained_step():
                ph = step_after_drain(failed, mid, f"between {best['rate']:g}/s and {failed['rate']:g}/s")
                if ph["sustained"]:
                    best = ph
                else:
                    failed = ph
        lowest = [ph for ph in steps if ph["rate"] == steps[0]["rate"]][-1]  # its repeat, if it had one
        results = []
        if best is not None:
            results += [
                lib.entry("e2e: highest sign-up rate sustained (webhook p99 < 1 s)", "sign-ups/s", best["rate"],
                          note=f"aim {AIM}/s; steps of {size['step_s']} s: "
                               + ", ".join(f"{p['rate']:g}/s {'ok' if p['sustained'] else 'not sustained'}"
                                           for p in steps)),
                lib.entry(f"e2e: sign-up → webhook p99 at {best['rate']:g}/s (highest sustained)", "ms",
                          best["p99"], None, TARGET, note=describe(best)),
                lib.entry(f"e2e: sign-up → webhook p50 at {best['rate']:g}/s", "ms", best["p50"]),
            ]
        else:
            results += [
                lib.entry("e2e: highest sign-up rate sustained (webhook p99 < 1 s)", "sign-ups/s", None,
                          note=f"no step was sustained, not even {lowest['rate']:g}/s"),
                lib.entry(f"e2e: sign-up → webhook p99 at {lowest['rate']:g}/s (lowest step)", "ms",
                          lowest["p99"], None, TARGET, note=describe(lowest)),
            ]
            results[-1]["met"] = False
        if failed is not None:
            results.append(lib.entry(f"e2e: sign-up → webhook p99 at {failed['rate']:g}/s (first rate not "
                                     "sustained)", "ms", failed["p99"], note=describe(failed)))
        notes = [f"rate ladder {', '.join(f'{r:g}' for r in size['rates'])}/s, {size['step_s']} s per step, "
                 f"webhooks awaited {size['wait_s']} s after each step; a step is sustained when every sign-up "
                 "was sent on time and accepted, every webhook arrived and p99 < 1 s; the ladder stops at the "
                 "first step that is not (a failed step is repeated once per run)"]
        if probe:
            notes.append(f"before the ladder, the database server spent {probe['retryable_cpu_ms']:.1f} ms of CPU "
                         f"per retryable insert_one (what the services send) and {probe['not_retryable_cpu_ms']:.1f} "
                         "ms per non-retryable one: SecantusDB 0.7.0b3 scans its table of retryable-write records "
                         "(kept 30 min, at most 10,000) under one lock on every retryable write, so once the server "
                         "has taken about 10,000 of them in half an hour (this run's earlier benchmarks, or steady "
                         "traffic: every sign-up leads to several across the services) each costs about 10 ms of its "
                         "CPU")
        for ph in retried:
            notes.append(f"the {ph['rate']:g}/s step was measured twice (a failed step is repeated once per run, "
                         f"after its backlog drained); first attempt: {describe(ph)}")
        if failed is None and best is not None and best["rate"] == size["rates"][-1]:
            notes.append(f"every step up to {best['rate']:g}/s was sustained: the machine's limit is higher")
        elif failed is None:
            notes.append("the time budget ended the ladder before a step failed: the limit may be higher")
        extra = {"latency_ms_quantiles": lib.quantiles((best or lowest)["lat"]),
                 "latency_ms_quantiles_low": lib.quantiles(lowest["lat"]),
                 "latency_ms_quantiles_failed": lib.quantiles(failed["lat"]) if failed else [],
                 "server_write_cost_ms": probe,
                 "highest_sustained_rate": best["rate"] if best else None,
                 "first_rate_not_sustained": failed["rate"] if failed else None,
                 "timeline": (best or lowest)["timeline"],
                 "timeline_failed": failed["timeline"] if failed else [],
                 "steps": [{k: v for k, v in ph.items() if k not in ("lat", "timeline", "missing_ids")}
                           for ph in steps], "retried_rates": [ph["rate"] for ph in retried]}
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
