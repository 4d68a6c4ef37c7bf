"""The whole story with every part as a real process (DESIGN.md, issue 6).

A platform admin creates a region; 10 GPs sign up, 9 are approved and 1
rejected; some close their practice to new patients; an integrator subscribes
to agreement.* and member.* with its own HTTP receiver; a region admin drafts
an agreement, opens the mandate vote, 7 GPs vote, the vote closes, the
agreement is mandated, signed and activated.
"""
from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta

import requests
from standardwebhooks import Webhook

from hecht import events as ev, topics
from hecht.config import settings
from tests.conftest import bearer, wait_until
from tests.support import maildir
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


def run_story(running, topic_reader, hecht_env, fault=lambda stage, receiver: None) -> dict:
    """The story; ``fault(stage, receiver)`` is called at a few stages to inject failures."""
    m, a, n = running.urls["members"], running.urls["agreements"], running.urls["notify"]
    platform = bearer("platform-admin")
    admin = bearer("region-admin", REGION)
    suffix = hecht_env["suffix"]

    ok(requests.post(f"{m}/v1/regions", headers=platform, json={
        "id": REGION, "name": "ELZ Story", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke"],
        "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}), 201)

    with Receiver() as receiver:
        sub = ok(requests.post(f"{n}/v1/regions/{REGION}/subscriptions", headers=bearer("integrator", REGION),
                               json={"url": receiver.url, "event_types": ["agreement.*", "member.*"],
                                     "description": "hospital transfer system"}), 201)
        assert sub["secret"].startswith("whsec_")

        gps = []
        for i, lang in enumerate(LANGS):
            body = {"given_name": f"Huisarts{i}", "family_name": f"Story{i}",
                    "email": f"gp{i}.{suffix}@example.org", "language": lang,
                    "registration": {"scheme": "RIZIV", "number": riziv(1000 + i)},
                    "practice": {"name": f"Praktijk {i}", "postcode": "9000", "municipality": "Gent"}}
            created = ok(requests.post(f"{m}/v1/regions/{REGION}/members", json=body), 201)
            assert created["status"] == "pending"
            gps.append({**body, "id": created["id"]})
            if i == 4:
                fault("signing-up", receiver)
        for gp in gps[:9]:
            assert ok(requests.post(f"{m}/v1/regions/{REGION}/members/{gp['id']}/approve", headers=admin,
                                    json={}))["status"] == "active"
        assert ok(requests.post(f"{m}/v1/regions/{REGION}/members/{gps[9]['id']}/reject", headers=admin,
                                json={"reason": "not a GP of this region"}))["status"] == "rejected"
        for gp in gps[:3]:
            ok(requests.put(f"{m}/v1/regions/{REGION}/members/{gp['id']}/capacity",
                            headers=bearer("gp", REGION, gp["id"]),
                            json={"status": "closed", "since": date.today().isoformat(), "note": "patiëntenstop"}))
        capacity = ok(requests.get(f"{m}/v1/regions/{REGION}/capacity", headers=admin))
        assert json.dumps(capacity).count("closed") >= 1

        # The agreements service learns the electorate from member events only.
        def nine_active_known() -> bool:
            from hecht import mongo
            s = settings("agreements")
            db = mongo.database(s.mongo_uri, s.database_name)
            return any(db[c].count_documents({"region_id": REGION, "status": "active"}) == 9
                       for c in db.list_collection_names())
        wait_until(nine_active_known, timeout=60, message="agreements to see 9 active members")

        draft = ok(requests.post(f"{a}/v1/regions/{REGION}/agreements", headers=admin, json={
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
        r = requests.post(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate", headers=admin, json={})
        assert r.status_code in (200, 201), r.text
        choices = ["for"] * 5 + ["against", "abstain"]
        for k, (gp, choice) in enumerate(zip(gps[:7], choices)):
            if k == 3:
                fault("voting", receiver)
            ok(requests.put(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate/votes/{gp['id']}",
                            headers=bearer("gp", REGION, gp["id"]), json={"choice": choice}))
        ok(requests.post(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate/close", headers=admin,
                                  json={}))
        tally = ok(requests.get(f"{a}/v1/regions/{REGION}/agreements/{aid}/mandate", headers=admin))
        assert tally["electorate_size"] == 9 and tally["quorum_met"] and tally["threshold_met"], tally
        assert (tally["for"], tally["against"], tally["abstain"]) == (5, 1, 1)
        assert ok(requests.get(f"{a}/v1/regions/{REGION}/agreements/{aid}", headers=admin))["status"] == "mandated"
        ok(requests.post(f"{a}/v1/regions/{REGION}/agreements/{aid}/sign", headers=admin, json={}))
        wait_until(lambda: ok(requests.get(f"{a}/v1/regions/{REGION}/agreements/{aid}", headers=admin))[
            "status"] == "active", timeout=60, message="the agreement to become active")

        # -- the integrator got every agreement event, in order, signed, redacted
        agreement_types = ["agreement.drafted", "agreement.mandate_requested", "agreement.mandated",
                           "agreement.signed", "agreement.activated"]

        def agreement_events():
            return [e for e in receiver.events() if e["subject"] == aid]
        wait_until(lambda: {ev.short_type(e["type"]) for e in agreement_events()} >= set(agreement_types),
                   timeout=90, message="every agreement event at the receiver")
        seen = list(dict.fromkeys(e["sequence"] for e in agreement_events()))
        assert seen == sorted(seen), f"agreement events out of order: {seen}"
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

    # -- every event on Kafka is valid against its schema
    for topic in topics.EVENT_TOPICS:
        for record in topic_reader(settings("members").topic(topic), until=lambda r: True, timeout=5):
            ev.validate(json.loads(record.value))

    # -- each GP got the right e-mails, in their language, once
    def mails(gp):
        return maildir.messages(to=gp["email"])
    wait_until(lambda: all(len(mails(gp)) >= 1 for gp in gps), timeout=60, message="e-mail for every GP")
    for gp in gps:
        got = mails(gp)
        ids = Counter(str(msg["X-Hecht-Notification"]) for msg in got)
        assert all(c == 1 for c in ids.values()), f"{gp['email']} got an e-mail twice: {ids}"
        assert {str(msg["Content-Language"]) for msg in got} == {gp["language"]}
    def per_member() -> Counter:
        items = ok(requests.get(f"{n}/v1/regions/{REGION}/notifications?limit=200", headers=admin))["items"]
        return Counter(x["member_id"] for x in items)
    # approved, vote opened, outcome/activated: notify may still be catching up after a fault
    wait_until(lambda: all(per_member()[gp["id"]] >= 3 for gp in gps[:7]), timeout=150,
               message="every voter's notifications")
    counts = per_member()
    assert counts[gps[9]["id"]] == 1  # the rejected GP: only the rejection
    for gp in gps:  # and, after all that, still no e-mail twice
        ids = Counter(str(msg["X-Hecht-Notification"]) for msg in mails(gp))
        assert all(c == 1 for c in ids.values()), f"{gp['email']} got an e-mail twice: {ids}"
    return {"deliveries": delivered, "duplicates_suppressed_by_receiver": duplicates,
            "failed_answers": failed_answers, "emails": sum(counts.values())}
