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
    consume, fast, notify_client, notify_db, receiver, subscribe)

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
