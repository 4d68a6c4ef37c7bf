"""The whole story with every part as a real process (DESIGN.md, issue 6).

A platform admin creates a region; 10 GPs sign up, 9 are approved and 1
rejected; some close their practice to new patients; an integrator subscribes
to agreement.* and member.* with its own HTTP receiver; a region admin drafts
an agreement, opens the mandate vote, 7 GPs vote, the vote closes, the
agreement is mandated, signed and activated.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from datetime import date, timedelta

import requests
from standardwebhooks import Webhook

from hecht import events as ev, topics
from hecht.config import settings
from tests.conftest import bearer, wait_until
from tests.support import maildir
from tests.e2e.load import SteadyLoad, read_to_end
from tests.support.receiver import Receiver

REGION = "elz-story"
LANGS = ["nl", "fr", "en", "nl", "nl", "fr", "en", "nl", "fr", "nl"]


def riziv(serial: int, competence: str = "004") -> str:
    """A valid RIZIV/INAMI number: physician, serial, check digits 97 − (N6 mod 97), competence."""
    n6 = 100000 + serial
    return f"{n6}{97 - n6 % 97:02d}{competence}"


def ok(r: requests.Response, status: int = 200) -> dict:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else {}


def test_the_whole_story(running, topic_reader, hecht_env):
    run_story(running, topic_reader, hecht_env)


def run_story(running, topic_reader, hecht_env, fault=lambda stage, receiver, steady: None, load: bool = False) -> dict:
    """The story; ``fault(stage, receiver, steady)`` is called at a few stages to inject failures.

    With ``load``, GPs keep signing up at a steady rate from the moment the integrator has
    subscribed until the agreement is active. Afterwards every acknowledged write must be
    stored and every event of the region on Kafka must have reached the receiver.
    Returns the run's summary (acknowledged, produced, delivered, missing, duplicates).
    """
    m, a, n = running.urls["members"], running.urls["agreements"], running.urls["notify"]
    http = requests.Session()
    acknowledged = Counter()
    started, phases = time.monotonic(), {}

    def phase(name: str) -> None:  # seconds since the start, in the summary: where a slow run spent it
        phases[name] = round(time.monotonic() - started, 1)

    def count_writes(r, *args, **kwargs):
        if r.request.method != "GET" and 200 <= r.status_code < 300:
            acknowledged["story"] += 1
    http.hooks["response"].append(count_writes)
    platform = bearer("platform-admin")
    admin = bearer("region-admin", REGION)
    suffix = hecht_env["suffix"]

    ok(http.post(f"{m}/v1/regions", headers=platform, json={
        "id": REGION, "name": "ELZ Story", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke"],
        "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}), 201)

    from tests.integration.test_notify_support import wait_for_region
    wait_for_region(REGION)  # notify makes subscriptions only in a region it has learned

    with contextlib.ExitStack() as cleanup:
        receiver = cleanup.enter_context(Receiver())
        sub = ok(http.post(f"{n}/v1/regions/{REGION}/subscriptions", headers=bearer("integrator", REGION),
                               json={"url": receiver.url, "event_types": ["agreement.*", "member.*"],
                                     "description": "hospital transfer system"}), 201)
        assert sub["secret"].startswith("whsec_")
        steady = cleanup.enter_context(SteadyLoad(m, REGION, suffix)) if load else None

        gps = []
        for i, lang in enumerate(LANGS):
            body = {"given_name": f"Huisarts{i}", "family_name": f"Story{i}",
                    "email": f"gp{i}.{suffix}@example.org", "language": lang,
                    "registration": {"scheme": "RIZIV", "number": riziv(1000 + i)},
                    "practice": {"name": f"Praktijk {i}", "postcode": "9000", "municipality": "Gent"}}
            created = ok(http.post(f"{m}/v1/regions/{REGION}/members", json=body,
                                   headers=bearer("region-admin", REGION)), 201)
            assert created["status"] == "pending"
            gps.append({**body, "id": created["id"]})
            if i == 4:
                fault("signing-up", receiver, steady)
        for gp in gps[:9]:
            assert ok(http.post(f"{m}/v1/regions/{REGION}/members/{gp['id']}/approve", headers=admin,
                                    json={}))["status"] == "active"
        assert ok(http.post(f"{m}/v1/regions/{REGION}/members/{gps[9]['id']}/reject", headers=admin,
                                json={"reason": "not a GP of this region"}))["status"] == "rejected"
        for gp in gps[:3]:
            ok(http.put(f"{m}/v1/regions/{REGION}/members/{gp['id']}/capacity",
                            headers=bearer("gp", REGION, gp["id"]),
                            json={"status": "closed", "since": date.today().isoformat(), "note": "patiëntenstop"}))
        capacity = ok(http.get(f"{m}/v1/regions/{REGION}/capacity", headers=admin))
        assert json.dumps(capacity).count("closed") >= 1

        # The agreements service learns the electorate from member events only.
        def nine_active_known() -> bool:
            from hecht import mongo
            s = settings("agreements")
            db = mongo.database(s.mongo_uri, s.database_name)
            return any(db[c].count_documents({"region_id": REGION, "status": "active"}) == 9
                       for c in db.list_collection_names())
        wait_until(nine_active_known, timeout=60, message="agreements to see 9 active members")
        phase("agreements to see 9 active members")

        draft = ok(http.post(f"{a}/v1/regions/{REGION}/agreements", headers=admin, json={
            "title": "Transmurale zorg kwetsbare ouderen", "theme": "frail-elderly",
            "summary": "Afspraken over ontslag uit het ziekenhuis.",
            "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital"}],
            "commitments": [{"party": "AZ Sint-Lucas", "text": "Ontslagbrief binnen 24 uur."},
                            {"party": "ELZ Story", "text": "Huisbezoek binnen 3 dagen."}],
            "municipalities": ["Gent"], "effective_from": date.today().isoformat(),
            "effective_until": (date.today() + timedelta(days=365)).isoformat(),
            "review_date": (date.today() + timedelta(days=180)).isoformat(),
            "documents": [{"title": "Tekst", "url": "https://example.org/afspraak.pdf"}]}), 201)
        aid = draft["id"]
        assert draft["status"] == "draft"
        r = http.post(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate", headers=admin, json={})
        assert r.status_code in (200, 201), r.text
        choices = ["for"] * 5 + ["against", "abstain"]
        for k, (gp, choice) in enumerate(zip(gps[:7], choices)):
            if k == 3:
                fault("voting", receiver, steady)
            ok(http.put(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate/votes/{gp['id']}",
                            headers=bearer("gp", REGION, gp["id"]), json={"choice": choice}))
        ok(http.post(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate/close", headers=admin,
                                  json={}))
        tally = ok(http.get(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate", headers=admin))
        assert tally["electorate_size"] == 9 and tally["quorum_met"] and tally["threshold_met"], tally
        assert (tally["for"], tally["against"], tally["abstain"]) == (5, 1, 1)
        assert ok(http.get(f"{a}/v1/regions/{REGION}/agreements/{aid}", headers=admin))["status"] == "mandated"
        ok(http.post(f"{a}/v1/regions/{REGION}/agreements/{aid}/sign", headers=admin, json={}))
        wait_until(lambda: ok(http.get(f"{a}/v1/regions/{REGION}/agreements/{aid}", headers=admin))[
            "status"] == "active", timeout=60, message="the agreement to become active")
        phase("the agreement to become active")
        if steady:
            steady.stop()
            assert not steady.violations, steady.violations[:5]
            assert steady.acknowledged, f"the steady load got no write through: {steady.statuses}"
            for member_id in steady.acknowledged:  # every acknowledged write is stored
                ok(http.get(f"{m}/v1/regions/{REGION}/members/{member_id}", headers=admin))

        # -- the integrator got every agreement event, in order, signed, redacted
        # (a draft never leaves the agreements service: the first event is the vote opening, issue 22)
        agreement_types = ["agreement.mandate_requested", "agreement.mandated",
                           "agreement.signed", "agreement.activated"]

        def agreement_events():
            return [e for e in receiver.events() if e["subject"] == aid]
        wait_until(lambda: {ev.short_type(e["type"]) for e in agreement_events()} >= set(agreement_types),
                   timeout=90, message="every agreement event at the receiver")
        phase("every agreement event at the receiver")
        seen = list(dict.fromkeys(e["sequence"] for e in agreement_events()))
        assert seen == sorted(seen), f"agreement events out of order: {seen}"
        drafts = [e["type"] for e in receiver.events() if e["type"].startswith("hecht.agreement.")
                  and (e["data"].get("status") == "draft" or ev.short_type(e["type"]) == "agreement.drafted")]
        assert drafts == [], f"a draft's events reached the integrator: {drafts}"

        # -- every event of the region the integrator subscribed to is on Kafka and reached it
        acked = set(steady.acknowledged) if steady else set()
        wait_until(lambda: acked <= {e["subject"] for e in region_events() if e["type"].endswith("signed_up.v1")},
                   timeout=90, message="an event on Kafka for every acknowledged sign-up")
        phase("an event on Kafka for every acknowledged sign-up")
        on_kafka = region_events()
        expected = {e["id"] for e in on_kafka if ev.short_type(e["type"]).split(".")[0] in ("member", "agreement")}

        def missing() -> set:
            return expected - {r["headers"]["webhook-id"] for r in receiver.accepted()}
        wait_until(lambda: not missing(), timeout=150, message="every subscribed event at the receiver")
        phase("every subscribed event at the receiver")
        hook = Webhook(sub["secret"])
        for req in receiver.accepted():
            hook.verify(req["body"], {k: req["headers"][k] for k in
                                      ("webhook-id", "webhook-timestamp", "webhook-signature")})
            event = json.loads(req["body"])
            assert req["headers"]["webhook-id"] == event["id"]
            if event["type"].startswith("hecht.member."):
                assert "personal" not in event["data"] and "@" not in req["body"].decode(), "member event not redacted"
        assert any(e["type"].startswith("hecht.member.") for e in receiver.events())

        delivered = len(receiver.accepted())
        duplicates = delivered - len({r["headers"]["webhook-id"] for r in receiver.accepted()})
        failed_answers = len(receiver.requests) - delivered
        lost = len(missing())

    # -- every event on Kafka is valid against its schema
    s = settings("members")
    for topic in topics.EVENT_TOPICS:
        for record in read_to_end(s.kafka_bootstrap_servers, s.topic(topic)):
            ev.validate(json.loads(record.value))

    # -- each GP got the right e-mails, in their language, once
    def mails(gp):
        return maildir.messages(to=gp["email"])
    wait_until(lambda: all(len(mails(gp)) >= 1 for gp in gps), timeout=60, message="e-mail for every GP")
    phase("e-mail for every GP")
    for gp in gps:
        got = mails(gp)
        ids = Counter(str(msg["X-Hecht-Notification"]) for msg in got)
        assert all(c == 1 for c in ids.values()), f"{gp['email']} got an e-mail twice: {ids}"
        assert {str(msg["Content-Language"]) for msg in got} == {gp["language"]}
    def per_member() -> Counter:
        items = ok(http.get(f"{n}/v1/regions/{REGION}/notifications?limit=200", headers=admin))["items"]
        return Counter(x["member_id"] for x in items)
    # approved, vote opened, outcome/activated: notify may still be catching up after a fault
    try:
        wait_until(lambda: all(per_member()[gp["id"]] >= 3 for gp in gps[:7]), timeout=120,
                   message="every voter's notifications")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_notify_state(gps)}") from None
    phase("every voter's notifications")
    counts = per_member()
    assert counts[gps[9]["id"]] == 1  # the rejected GP: only the rejection
    for gp in gps:  # and, after all that, still no e-mail twice
        ids = Counter(str(msg["X-Hecht-Notification"]) for msg in mails(gp))
        assert all(c == 1 for c in ids.values()), f"{gp['email']} got an e-mail twice: {ids}"
    return {"writes_acknowledged": acknowledged["story"] + len(acked),
            "load": dict(steady.statuses) if steady else {},
            "events_produced": len({e["id"] for e in on_kafka}),
            "events_republished_on_kafka": len(on_kafka) - len({e["id"] for e in on_kafka}),
            "deliveries": delivered, "missing": lost,
            "duplicates_suppressed_by_receiver": duplicates,
            "failed_answers": failed_answers, "emails": sum(counts.values()), "phases_s": phases}


def _notify_state(gps: list[dict]) -> str:
    """What notify holds, for a failure message: which notification each GP has, what it consumed."""
    from hecht import mongo
    st = settings("notify")
    db = mongo.database(st.mongo_uri, st.database_name)
    per_gp = {gp["id"]: sorted(d.get("template", "?") for d in db.notifications.find({"member_id": gp["id"]}))
              for gp in gps}
    consumed = Counter(d.get("type") for d in db.inbox.find({}, {"type": 1}))
    return f"notifications per GP: {per_gp}\nnotify consumed: {dict(consumed)}"


def region_events() -> list[dict]:
    """Every record of the story's region on the members and agreements topics, duplicates kept."""
    s = settings("members")
    found = []
    for topic in (topics.MEMBERS, topics.AGREEMENTS):
        for record in read_to_end(s.kafka_bootstrap_servers, s.topic(topic)):
            event = json.loads(record.value)
            if event.get("region") == REGION:
                found.append(event)
    return found
