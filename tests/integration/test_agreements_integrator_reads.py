"""What an integrator reads about agreements (issue 22, item 3), on the real stack.

The README's "Personal data" table gives integrators the agreement's own content and no staff
free text, and DESIGN.md says integrators never see drafts. Every read path an integrator has
is checked here with a termination reason holding an e-mail address and a phone number: the
API (get, list, history, the tally), the events as they go to Kafka, and the webhook copies
notify keeps and delivers. Region staff still read everything.
"""
from __future__ import annotations

import json

from hecht import events as ev
from tests.conftest import bearer
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    REGION, active, admin, agreements_db, client, clock, drafted, pending_events, seed_region)
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    consume, fast, notify_client, notify_db, notify_worker, receiver, subscribe)

BASE = f"/v1/regions/{REGION}/agreements"
EMAIL, PHONE = "jan.peeters@example.org", "+32 470 12 34 56"
REASON = f"Ended after a dispute; call Jan ({EMAIL}, {PHONE}) for details"
SECRETS = (EMAIL, PHONE, "470 12 34 56", "dispute")


def _integrator() -> dict:
    return bearer("integrator", REGION)


def _assert_no_staff_text(what: str, payload) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    for secret in SECRETS:
        assert secret not in text, (what, secret, text[:2000])
    assert "termination_reason" not in text, (what, text[:2000])


def _terminated_with_drafts(client, clock) -> tuple[dict, dict, dict]:
    """An agreement terminated with REASON, a draft amendment of an active one, and a plain draft."""
    voters = seed_region(members=1)
    ended = active(client, voters, clock)
    url = f"{BASE}/{ended['id']}"
    kept = active(client, voters, clock, title="Palliative care at home")
    amendment = client.post(f"{BASE}/{kept['id']}/amendments", json={"summary": "draft text"}, headers=admin())
    assert amendment.status_code == 201, amendment.get_json()
    draft = drafted(client, title="Secret plan in draft")
    done = client.post(f"{url}/terminate", json={"reason": REASON}, headers=admin())
    assert done.status_code == 200, done.get_json()
    return done.get_json(), amendment.get_json(), draft


def test_integrators_read_no_staff_free_text_and_no_drafts_on_the_api(client, clock):
    ended, amendment, draft = _terminated_with_drafts(client, clock)
    url = f"{BASE}/{ended['id']}"

    got = client.get(url, headers=_integrator())
    assert got.status_code == 200 and got.get_json()["status"] == "terminated"
    _assert_no_staff_text("get", got.get_data(as_text=True))

    listed = client.get(BASE, headers=_integrator())
    assert listed.status_code == 200
    items = listed.get_json()["items"]
    assert ended["id"] in {a["id"] for a in items}
    assert all(a["status"] != "draft" for a in items) and {draft["id"], amendment["id"]}.isdisjoint(
        a["id"] for a in items)
    _assert_no_staff_text("list", listed.get_data(as_text=True))
    for status in ("terminated", "draft"):
        filtered = client.get(f"{BASE}?status={status}", headers=_integrator())
        _assert_no_staff_text(f"list status={status}", filtered.get_data(as_text=True))
        assert all(a["status"] == "terminated" for a in filtered.get_json()["items"])

    history = client.get(f"{url}/history", headers=_integrator())
    assert history.status_code == 200
    events = history.get_json()["items"]
    assert ev.short_type(events[-1]["type"]) == "agreement.terminated"
    assert all(e["data"]["status"] != "draft" for e in events)   # its drafting is the region's own business
    assert all("actor" not in e for e in events)
    _assert_no_staff_text("history", history.get_data(as_text=True))

    # drafts: 404 on every path, absent from version chains
    for d in (draft, amendment):
        for path in ("", "/history", "/mandate"):
            r = client.get(f"{BASE}/{d['id']}{path}", headers=_integrator())
            assert r.status_code == 404 and r.mimetype == "application/problem+json", (d["status"], path)
            assert "Secret plan" not in r.get_data(as_text=True)
    chain = client.get(f"{BASE}/{amendment['previous_id']}", headers=_integrator()).get_json()["versions"]
    assert amendment["id"] not in {v["id"] for v in chain} and all(v["status"] != "draft" for v in chain)

    # region staff still read everything
    staff = client.get(url, headers=admin()).get_json()
    assert staff["termination_reason"] == REASON
    staff_history = client.get(f"{url}/history", headers=admin()).get_json()["items"]
    assert staff_history[-1]["data"]["reason"] == REASON and staff_history[-1]["actor"]
    assert {draft["id"], amendment["id"]} <= {a["id"] for a in client.get(BASE, headers=admin()).get_json()["items"]}
    assert client.get(f"{BASE}/{draft['id']}", headers=admin()).status_code == 200
    chain = client.get(f"{BASE}/{amendment['previous_id']}", headers=admin()).get_json()["versions"]
    assert amendment["id"] in {v["id"] for v in chain}


def test_the_events_integrators_read_on_kafka_and_by_webhook_carry_no_staff_text(client, clock, notify_client, receiver):
    ended, _, _ = _terminated_with_drafts(client, clock)
    events = pending_events()   # exactly what the relay publishes on hecht.agreements
    terminated = [e for e in events if e["subject"] == ended["id"] and e["type"].endswith("terminated.v1")]
    assert len(terminated) == 1
    for e in events:
        ev.validate(e)
        _assert_no_staff_text(f"kafka {e['type']}", e)

    # notify: the copy it keeps and delivers to a subscriber of every agreement event
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    consume(*events)
    copies = list(notify_db().event_copies.find({"subject": ended["id"]}))
    assert len(copies) == len(pending_events(ended["id"]))
    for c in copies:
        _assert_no_staff_text(f"webhook {c['type']}", c["event"])
    assert notify_db().deliveries.count_documents({"subscription_id": sub["id"], "event_id": terminated[0]["id"]}) == 1


# -- drafts never leave the agreements service (issue 22, item 3) ------------------------------
DRAFT_TYPES = ("agreement.drafted", "agreement.revised")


def _draft_state(event: dict) -> bool:
    """Written out rather than hecht.events.is_internal, so the test does not trust the code's rule."""
    return ev.short_type(event["type"]) in DRAFT_TYPES or event["data"].get("status") == "draft"


def test_draft_events_reach_neither_kafka_nor_webhooks_and_staff_keep_the_timeline(
        client, clock, notify_client, notify_worker, receiver, topic_reader):
    from hecht import topics
    from hecht.config import settings
    from tests.conftest import wait_until
    from tests.integration.test_agreements_support import agreements_relay

    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])   # before anything is published
    notify_worker("consumer", "deliveries")
    voters = seed_region(members=2)
    # An agreement drafted, revised, then put to the vote; an active one whose amendment stays a draft.
    a = drafted(client, title="Palliative care, first draft")
    url = f"{BASE}/{a['id']}"
    revised = client.patch(url, json={"title": "Palliative care pathway", "municipalities": ["Gent", "Merelbeke"]},
                           headers={**admin(), "If-Match": '"1"'})
    assert revised.status_code == 200, revised.get_json()
    opened = client.post(f"{url}/mandate", headers=admin())
    assert opened.status_code == 201 and opened.get_json()["status"] == "in_consultation", opened.get_json()
    kept = active(client, voters, clock, title="Out-of-hours triage")
    amendment = client.post(f"{BASE}/{kept['id']}/amendments", json={"summary": "Secret draft change"},
                            headers=admin())
    assert amendment.status_code == 201, amendment.get_json()
    amendment = amendment.get_json()
    assert client.patch(f"{BASE}/{amendment['id']}", json={"title": "Secret draft title"},
                        headers={**admin(), "If-Match": '"1"'}).status_code == 200

    relay = agreements_relay()
    try:
        relay.run_once()
    finally:
        relay.close()

    # Kafka: an independent reader of the topic (this test's prefix) from its beginning.
    topic = settings("agreements").topic(topics.AGREEMENTS)
    records = topic_reader(topic, until=lambda rs: sum(
        ev.decode(r.value)["type"].endswith(("mandate_requested.v1", "activated.v1")) for r in rs) >= 3)
    on_kafka = [ev.decode(r.value) for r in records]
    assert [e for e in on_kafka if _draft_state(e)] == []
    assert amendment["id"] not in {e["subject"] for e in on_kafka}
    assert "Secret draft" not in json.dumps(on_kafka)
    # The first event others see carries the agreement's whole (revised) content; its sequence
    # counts the two draft events it follows.
    first = next(e for e in on_kafka if e["subject"] == a["id"])
    assert ev.short_type(first["type"]) == "agreement.mandate_requested" and first["sequence"] == 3
    data = first["data"]
    assert data["title"] == "Palliative care pathway" and data["municipalities"] == ["Gent", "Merelbeke"]
    assert data["partners"] == a["partners"] and data["theme"] == a["theme"]
    assert (data["effective_from"], data["effective_until"], data["review_date"]) == (
        a["effective_from"], a["effective_until"], a["review_date"])

    # Webhooks: the subscriber of agreement.* gets the vote and the active agreement's events,
    # never a draft's; notify keeps no copy of one either.
    def delivered() -> list[dict]:
        return [b for b in receiver.bodies() if b.get("subject") in (a["id"], kept["id"])]
    wait_until(lambda: {(b["subject"], ev.short_type(b["type"])) for b in delivered()} >= {
        (a["id"], "agreement.mandate_requested"), (kept["id"], "agreement.activated")},
        timeout=60, message="the published agreement events at the receiver")
    assert [b for b in receiver.bodies() if _draft_state(b)] == []
    assert amendment["id"] not in {b.get("subject") for b in receiver.bodies()}
    assert notify_db().event_copies.count_documents({"type": {"$in": list(DRAFT_TYPES)}}) == 0
    assert notify_db().event_copies.count_documents({"event.data.status": "draft"}) == 0
    assert notify_db().deliveries.count_documents({"subscription_id": sub["id"],
                                                   "event_type": {"$in": list(DRAFT_TYPES)}}) == 0

    # Region staff keep the whole timeline, drafts and who made them included; integrators read
    # the published part only.
    staff = client.get(f"{url}/history", headers=admin()).get_json()["items"]
    assert [(ev.short_type(e["type"]), e["sequence"]) for e in staff] == [
        ("agreement.drafted", 1), ("agreement.revised", 2), ("agreement.mandate_requested", 3)]
    assert staff[0]["data"]["title"] == "Palliative care, first draft" and all(e["actor"] for e in staff)
    draft_history = client.get(f"{BASE}/{amendment['id']}/history", headers=admin()).get_json()["items"]
    assert [ev.short_type(e["type"]) for e in draft_history] == ["agreement.drafted", "agreement.revised"]
    public = client.get(f"{url}/history", headers=_integrator()).get_json()["items"]
    assert [ev.short_type(e["type"]) for e in public] == ["agreement.mandate_requested"]


def test_a_draft_event_left_in_the_outbox_is_archived_not_published(client, topic_reader):
    """An outbox entry an older version wrote for a draft: the relay keeps it for the history only."""
    from hecht import outbox, topics
    from hecht.config import settings
    from tests.integration.test_agreements_support import agreements_relay
    a = drafted(client, title="Written by an older version")
    db = agreements_db()
    [entry] = list(db[outbox.ARCHIVE].find({"subject": a["id"]}))
    assert db[outbox.OUTBOX].count_documents({"subject": a["id"]}) == 0   # drafts skip the outbox
    db[outbox.ARCHIVE].delete_one({"_id": entry["_id"]})
    db[outbox.OUTBOX].insert_one(entry)                                    # as the old code stored it
    seed_region(members=1)
    marker = drafted(client, title="Marker")
    assert client.post(f"{BASE}/{marker['id']}/mandate", headers=admin()).status_code == 201

    relay = agreements_relay()
    try:
        assert relay.run_once() == 2   # the old draft entry (archived) and the marker's vote (published)
    finally:
        relay.close()
    records = topic_reader(settings("agreements").topic(topics.AGREEMENTS), until=lambda rs: len(rs) >= 1)
    assert [(ev.decode(r.value)["subject"], ev.decode(r.value)["type"]) for r in records] == [
        (marker["id"], "hecht.agreement.mandate_requested.v1")]
    assert db[outbox.OUTBOX].count_documents({}) == 0
    assert [e["id"] for e in client.get(f"{BASE}/{a['id']}/history", headers=admin()).get_json()["items"]] == [
        entry["id"]]


def test_notify_drops_a_draft_event_before_matching_subscriptions(notify_client, receiver):
    """The second line: a draft-state agreement event that reaches notify anyway (an older
    producer) is neither copied, matched, delivered nor replayable."""
    from datetime import datetime, timedelta, timezone
    from tests.integration.test_notify_support import agreement_event, integrator, mandate
    sub = subscribe(notify_client, receiver.url(), ["*"])
    old = agreement_event("agreement.drafted", "a_old_draft", 1)
    old_revised = agreement_event("agreement.revised", "a_old_draft", 2)
    published = agreement_event("agreement.mandate_requested", "a_old_draft", 3, status="in_consultation",
                                mandate=mandate(), electorate=["m_1", "m_2"])
    consume(old, old_revised, published)
    assert [c["type"] for c in notify_db().event_copies.find({"subject": "a_old_draft"})] == [
        "agreement.mandate_requested"]
    assert [d["event_type"] for d in notify_db().deliveries.find({"subscription_id": sub["id"]})] == [
        "agreement.mandate_requested"]
    # A copy an older notify kept of a draft's event is never replayed.
    legacy = agreement_event("agreement.drafted", "a_legacy_draft", 1)
    notify_db().event_copies.insert_one({"_id": legacy["id"], "region": REGION, "type": "agreement.drafted",
                                         "subject": "a_legacy_draft", "sequence": 1,
                                         "time": datetime.now(timezone.utc), "event": legacy})
    since = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    replay = notify_client.post(f"/v1/regions/{REGION}/subscriptions/{sub['id']}/replay", json={"since": since},
                                headers=integrator())
    assert replay.status_code == 202, replay.get_data(as_text=True)
    assert replay.get_json()["matched"] == 1
    assert notify_db().deliveries.count_documents({"subscription_id": sub["id"], "event_id": legacy["id"]}) == 0


def test_subscriptions_to_a_draft_event_type_are_refused_with_the_reason(notify_client, receiver):
    for types in (["agreement.drafted"], ["agreement.activated", "hecht.agreement.revised.v1"]):
        r = notify_client.post(f"/v1/regions/{REGION}/subscriptions",
                               json={"url": receiver.url(), "event_types": types},
                               headers=bearer("integrator", REGION))
        assert r.status_code == 422 and r.mimetype == "application/problem+json", r.get_data(as_text=True)
        text = json.dumps(r.get_json()["errors"])
        assert "not delivered" in text and "draft never leaves the agreements service" in text, text
    ok = notify_client.post(f"/v1/regions/{REGION}/subscriptions",
                            json={"url": receiver.url(), "event_types": ["agreement.*"]},
                            headers=bearer("integrator", REGION))
    assert ok.status_code == 201, ok.get_data(as_text=True)
    catalogue = {t["type"] for t in notify_client.get("/v1/event-types").get_json()["items"]}
    assert "agreement.mandate_requested" in catalogue and not catalogue & set(DRAFT_TYPES)
