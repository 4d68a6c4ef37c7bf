"""The agreements HTTP API against the real stack: every endpoint, roles, region isolation, privacy."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from hecht import events as ev
from services.agreements import domain, handlers
from tests.conftest import bearer
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    OTHER_REGION, REGION, T0, active, admin, agreements_db, body, client, clock, drafted, event_types, gp,
    known_region, mandated, member_event, apply_directly, pending_events, seed_region)

BASE = f"/v1/regions/{REGION}/agreements"


def _history(agreement_id: str) -> list[dict]:
    """Every event of the agreement, published or not (drafts' events are never published)."""
    from services.agreements.repository import AgreementRepository
    return AgreementRepository(agreements_db()).history(agreement_id)


@pytest.fixture(autouse=True)
def _regions_known(request):
    """Both regions announced by the members service (drafting needs a known region)."""
    if "client" in request.fixturenames:
        request.getfixturevalue("client")
        known_region(REGION)
        known_region(OTHER_REGION)


def _problem(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/problem+json"
    assert "Traceback" not in r.get_data(as_text=True)
    return r.get_json()


# -- draft, get, revise --------------------------------------------------------------------------
def test_draft_returns_the_new_version_and_records_its_event(client):
    r = client.post(BASE, json=body(), headers=admin())
    assert r.status_code == 201, r.get_json()
    a = r.get_json()
    assert a["id"].startswith("a_") and a["status"] == "draft" and a["version"] == 1
    assert a["previous_id"] is None and a["mandate"] is None
    assert a["partners"][0] == {"name": "AZ Sint-Lucas", "kind": "hospital", "identifier": "KBO-0123"}
    assert r.headers["ETag"] == '"1"' and r.headers["Location"] == f"{BASE}/{a['id']}"

    got = client.get(f"{BASE}/{a['id']}", headers=gp("m_001"))
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    assert got.get_json()["versions"] == [{"id": a["id"], "version": 1, "status": "draft",
                                          "activated_on": None, "ended_on": None}]
    assert pending_events(a["id"]) == []   # a draft's event never goes into the outbox (issue 22)
    [event] = _history(a["id"])            # it is in the agreement's history, for region staff
    ev.validate(event)
    assert event["type"] == "hecht.agreement.drafted.v1" and event["source"] == f"/regions/{REGION}/agreements"
    assert event["subject"] == a["id"] and event["sequence"] == 1 and event["region"] == REGION
    assert event["data"]["title"] == body()["title"] and event["data"]["status"] == "draft"


@pytest.mark.parametrize("overrides, field", [
    ({"effective_until": "2026-03-01"}, "effective_until"),
    ({"review_date": "2028-01-01"}, "review_date"),
    ({"partners": []}, "partners"),
    ({"commitments": []}, "commitments"),
    ({"theme": "gardening"}, "theme"),
    ({"partners": [{"name": "X", "kind": "bakery"}]}, "partners"),
    ({"documents": [{"title": "T", "url": "http://example.org/x.pdf"}]}, "documents"),
    ({"title": "x" * 201}, "title"),
    ({"colour": "blue"}, "colour"),
    ({"effective_from": "1 April"}, "effective_from"),
])
def test_draft_validation_is_field_by_field_and_stores_nothing(client, overrides, field):
    problem = _problem(client.post(BASE, json=body(**overrides), headers=admin()), 422)
    assert field in problem["errors"], problem
    assert agreements_db().agreements.count_documents({}) == 0
    assert agreements_db().outbox.count_documents({}) == 0


def test_municipalities_must_lie_in_the_region_once_it_is_known(client):
    seed_region()
    problem = _problem(client.post(BASE, json=body(municipalities=["Gent", "Antwerpen"]), headers=admin()), 422)
    assert problem["errors"]["municipalities"] == [f"Antwerpen is not in region {REGION}"]
    assert client.post(BASE, json=body(municipalities=["gent", "Merelbeke"]), headers=admin()).status_code == 201


def test_revise_needs_if_match_and_refuses_a_stale_one(client):
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    _problem(client.patch(url, json={"title": "New"}, headers=admin()), 428)
    ok = client.patch(url, json={"title": "New", "partners": [{"name": "UZ Gent", "kind": "hospital"}]},
                      headers={**admin(), "If-Match": '"1"'})
    assert ok.status_code == 200, ok.get_json()
    assert ok.headers["ETag"] == '"2"' and ok.get_json()["title"] == "New"
    assert ok.get_json()["partners"] == [{"name": "UZ Gent", "kind": "hospital"}]
    problem = _problem(client.patch(url, json={"title": "Lost update"}, headers={**admin(), "If-Match": '"1"'}), 412)
    assert '"2"' in problem["detail"]
    _problem(client.patch(url, json={}, headers={**admin(), "If-Match": '"2"'}), 422)
    _problem(client.patch(url, json={"effective_until": "2020-01-01"}, headers={**admin(), "If-Match": '"2"'}), 422)
    assert client.get(url, headers=admin()).get_json()["title"] == "New"
    assert event_types(a["id"]) == ["agreement.drafted", "agreement.revised"]


def test_only_a_draft_can_be_revised(client):
    voters = seed_region(members=1)
    a = mandated(client, voters)
    problem = _problem(client.patch(f"{BASE}/{a['id']}", json={"title": "Too late"},
                                    headers={**admin(), "If-Match": f'"{a["sequence"]}"'}), 409)
    assert problem["current_status"] == "mandated" and "mandated" in problem["detail"]


def test_idempotency_key_replays_the_draft(client):
    headers = {**admin(), "Idempotency-Key": "draft-1"}
    first = client.post(BASE, json=body(), headers=headers)
    again = client.post(BASE, json=body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["id"] == first.get_json()["id"]
    assert agreements_db().agreements.count_documents({}) == 1


# -- list, filters, pagination -------------------------------------------------------------------
def test_list_filters_and_pagination(client, clock):
    voters = seed_region(members=1)
    diabetes = drafted(client)
    nights = drafted(client, title="Night shifts", theme="out-of-hours",
                     partners=[{"name": "Huisartsenwachtpost Gent", "kind": "out-of-hours-post"}],
                     municipalities=["Merelbeke"], effective_from="2026-03-01", effective_until=None,
                     review_date=None)
    in_force = active(client, voters, clock, effective_from="2026-03-01", effective_until="2026-12-31",
                      review_date=None, partners=[{"name": "Thuiszorg Gent", "kind": "home-nursing"}])

    def ids(query: str) -> list[str]:
        r = client.get(f"{BASE}?{query}", headers=gp("m_001"))
        assert r.status_code == 200, r.get_json()
        return [a["id"] for a in r.get_json()["items"]]

    assert ids("") == [diabetes["id"], nights["id"], in_force["id"]]
    assert ids("status=draft") == [diabetes["id"], nights["id"]]
    assert ids("status=active") == [in_force["id"]]
    assert ids("theme=out-of-hours") == [nights["id"]]
    assert ids("partner=az%20sint-lucas") == [diabetes["id"]]
    assert ids("partner=AZ") == []  # a partner's name, not a fragment
    assert ids("municipality=merelbeke") == [nights["id"]]
    assert ids("active_on=2026-06-01") == [in_force["id"]]
    assert ids("active_on=2026-12-31") == [in_force["id"]]
    assert ids("active_on=2027-01-01") == []
    assert ids("active_on=2026-02-28") == []
    assert ids("status=active&theme=out-of-hours") == []

    seen, url = [], f"{BASE}?limit=2"
    while url:
        page = client.get(url, headers=admin()).get_json()
        seen += [a["id"] for a in page["items"]]
        url = page["next"]
    assert seen == ids("")
    _problem(client.get(f"{BASE}?status=lost", headers=admin()), 422)
    _problem(client.get(f"{BASE}?active_on=yesterday", headers=admin()), 422)


def test_items_in_lists_never_carry_votes_or_electorates(client):
    voters = seed_region(members=3)
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    client.post(f"{url}/mandate", headers=admin())
    client.put(f"{url}/mandate/votes/{voters[0]}", json={"choice": "against"}, headers=gp(voters[0]))
    for response in (client.get(BASE, headers=admin()), client.get(url, headers=admin()),
                     client.get(f"{url}/mandate", headers=admin())):
        text = response.get_data(as_text=True)
        assert response.status_code == 200 and voters[0] not in text
        assert "ballots" not in text and "your_vote" not in text and "electorate\"" not in text
    history = client.get(f"{url}/history", headers=admin()).get_json()["items"]
    cast = [e for e in history if e["type"] == "hecht.agreement.vote_cast.v1"]
    assert len(cast) == 1 and voters[0] not in json.dumps(cast[0])
    assert cast[0]["data"]["mandate"]["cast"] == 1 and "against" not in cast[0]["data"]["mandate"]


# -- the mandate vote ----------------------------------------------------------------------------
def test_a_full_vote_passes_and_tallies(client, clock):
    voters = seed_region(members=4, policy={"quorum": 0.5, "approval_threshold": 0.6, "voting_period_days": 10})
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    opened = client.post(f"{url}/mandate", headers=admin())
    assert opened.status_code == 201, opened.get_json()
    m = opened.get_json()["mandate"]
    assert opened.get_json()["status"] == "in_consultation"
    assert m["electorate_size"] == 4 and m["status"] == "open" and m["cast"] == 0
    assert m["deadline"].startswith("2026-03-12T09:00:00")  # now + 10 days from the region's policy

    def vote(member, choice):
        r = client.put(f"{url}/mandate/votes/{member}", json={"choice": choice}, headers=gp(member))
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    assert vote(voters[0], "for")["choice"] == "for"
    vote(voters[1], "against")
    mine = vote(voters[1], "for")  # changed their mind
    assert mine["choice"] == "for" and mine["mandate"]["your_vote"] == "for"
    assert mine["mandate"]["cast"] == 2 and "for" not in mine["mandate"]  # secret while open
    vote(voters[2], "abstain")

    tally = client.get(f"{url}/mandate", headers=admin()).get_json()
    assert {k: tally[k] for k in ("cast", "electorate_size")} == {"cast": 3, "electorate_size": 4}
    assert tally["turnout"] == 0.75 and tally["quorum_met"]
    assert not {"for", "against", "abstain", "threshold_met"} & set(tally)   # not even for the region-admin
    assert "your_vote" not in tally
    assert client.get(f"{url}/mandate", headers=gp(voters[2])).get_json()["your_vote"] == "abstain"
    assert client.get(f"{url}/mandate/votes/{voters[0]}", headers=gp(voters[0])).get_json()["choice"] == "for"

    closed = client.post(f"{url}/mandate/close", headers=admin())
    assert closed.status_code == 200 and closed.get_json()["status"] == "mandated"
    assert closed.get_json()["mandate"]["close_reason"] == "closed-early"
    result = closed.get_json()["mandate"]   # revealed at the close
    assert (result["for"], result["against"], result["abstain"], result["threshold_met"]) == (2, 0, 1, True)
    _problem(client.put(f"{url}/mandate/votes/{voters[3]}", json={"choice": "for"}, headers=gp(voters[3])), 409)
    assert event_types(a["id"]) == ["agreement.drafted", "agreement.mandate_requested"] + \
        ["agreement.vote_cast"] * 4 + ["agreement.mandated"]
    for e in pending_events(a["id"]):
        ev.validate(e)


def test_the_vote_closes_itself_when_everyone_has_voted_and_can_be_rejected(client):
    voters = seed_region(members=2)
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    client.post(f"{url}/mandate", headers=admin())
    client.put(f"{url}/mandate/votes/{voters[0]}", json={"choice": "against"}, headers=gp(voters[0]))
    last = client.put(f"{url}/mandate/votes/{voters[1]}", json={"choice": "abstain"}, headers=gp(voters[1]))
    assert last.get_json()["mandate"]["status"] == "rejected"
    got = client.get(url, headers=admin()).get_json()
    assert got["status"] == "rejected" and got["mandate"]["close_reason"] == "everyone-voted"
    assert event_types(a["id"])[-1] == "agreement.mandate_rejected"
    _problem(client.post(f"{url}/sign", headers=admin()), 409)


@pytest.mark.parametrize("region", ["nonexistent-region-zz", "0", "UPPER", "a_b", "-x", "x" * 64, "%00", "é-zone"])
def test_agreements_only_in_a_known_well_formed_region(client, region):
    """Issue 22 item 8: a region the members service never announced is 404, and so is a malformed
    region id (it was a 500, InvalidEvent); nothing is stored."""
    for headers in (admin(region), bearer("platform-admin")):
        problem = _problem(client.post(f"/v1/regions/{region}/agreements", json=body(), headers=headers), 404)
        assert "region" in problem["detail"]
    assert agreements_db().agreements.count_documents({}) == 0 and agreements_db().outbox.count_documents({}) == 0
    if region != "nonexistent-region-zz":   # malformed: 404 on every path of the region
        _problem(client.get(f"/v1/regions/{region}/agreements", headers=bearer("platform-admin")), 404)
        _problem(client.get(f"/v1/regions/{region}/agreements/a_1/history", headers=admin(region)), 404)


def test_opening_a_vote_needs_a_region_with_active_members(client):
    a = drafted(client)
    url = f"{BASE}/{a['id']}/mandate"
    apply_directly(*[e for e in [member_event("m_x", "pending", 1)]])
    problem = _problem(client.post(url, headers=admin()), 409)
    assert problem["reason"] == "empty-electorate"
    assert client.get(f"{BASE}/{a['id']}", headers=admin()).get_json()["status"] == "draft"
    _problem(client.get(url, headers=admin()), 404)  # no tally before a vote opens


def test_votes_only_by_electors_for_themselves_before_the_deadline(client, clock):
    voters = seed_region(members=2)
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    client.post(f"{url}/mandate", headers=admin())
    apply_directly(member_event("m_late", "active", 2))  # enrolled after the vote opened
    _problem(client.put(f"{url}/mandate/votes/m_late", json={"choice": "for"}, headers=gp("m_late")), 403)
    _problem(client.put(f"{url}/mandate/votes/{voters[0]}", json={"choice": "for"}, headers=gp(voters[1])), 403)
    _problem(client.get(f"{url}/mandate/votes/{voters[0]}", headers=gp(voters[1])), 403)
    _problem(client.put(f"{url}/mandate/votes/{voters[0]}", json={"choice": "for"}, headers=admin()), 403)
    _problem(client.put(f"{url}/mandate/votes/{voters[0]}", json={"choice": "maybe"}, headers=gp(voters[0])), 422)
    _problem(client.post(f"{url}/mandate", headers=admin()), 409)  # already open
    clock.advance(days=14)
    problem = _problem(client.put(f"{url}/mandate/votes/{voters[0]}", json={"choice": "for"},
                                  headers=gp(voters[0])), 409)
    assert problem["reason"] == "deadline-passed"
    assert client.get(f"{url}/mandate", headers=admin()).get_json()["cast"] == 0


def test_concurrent_votes_are_all_counted_once(client):
    """Many GPs voting at the same moment: every vote in the tally, one event each, no gaps."""
    voters = seed_region(members=24)
    a = drafted(client)
    assert client.post(f"{BASE}/{a['id']}/mandate", headers=admin()).status_code == 201
    db = agreements_db()
    start = threading.Barrier(len(voters) - 1)
    errors = []

    def vote(member: str, choice: str):
        try:
            start.wait()
            handlers.handle(domain.CastVote(REGION, a["id"], member, choice), db,
                            now=T0 + timedelta(days=1))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    choices = ["for", "against", "abstain"]
    threads = [threading.Thread(target=vote, args=(m, choices[i % 3])) for i, m in enumerate(voters[:-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    tally = client.get(f"{BASE}/{a['id']}/mandate", headers=admin()).get_json()
    assert tally["cast"] == 23 and "for" not in tally
    events = _history(a["id"])
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    cast = [e for e in events if e["type"] == "hecht.agreement.vote_cast.v1"]
    counts = sorted(e["data"]["mandate"]["cast"] for e in cast)
    assert len(cast) == 23 and counts == list(range(1, 24))
    # no vote lost among the racing commits: the result, revealed at the close, counts them all
    closed = handlers.handle(domain.CloseMandate(REGION, a["id"], None), agreements_db(),
                             now=T0 + timedelta(days=2)).mandate.tally
    assert (closed.for_, closed.against, closed.abstain) == (8, 8, 7)


# -- after the mandate ---------------------------------------------------------------------------
def test_sign_before_the_start_date_then_terminate(client, clock):
    voters = seed_region(members=1)
    a = mandated(client, voters)
    url = f"{BASE}/{a['id']}"
    _problem(client.post(f"{url}/sign", headers=gp(voters[0])), 403)
    _problem(client.post(f"{url}/sign", headers={**admin(), "If-Match": '"1"'}), 412)
    signed = client.post(f"{url}/sign", headers={**admin(), "If-Match": f'"{a["sequence"]}"'})
    assert signed.status_code == 200 and signed.get_json()["status"] == "mandated"
    assert signed.get_json()["signed_at"].startswith("2026-03-02")
    _problem(client.post(f"{url}/sign", headers=admin()), 409)
    _problem(client.post(f"{url}/terminate", json={"reason": "x"}, headers=admin()), 409)  # not active yet
    from services.agreements.worker import Scheduler
    clock.set(clock().replace(month=4, day=1))
    assert Scheduler(agreements_db(), now=clock).run_once()["activate"] == 1
    _problem(client.post(f"{url}/terminate", json={}, headers=admin()), 422)
    done = client.post(f"{url}/terminate", json={"reason": "The hospital ended the pathway"}, headers=admin())
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "terminated" and done.get_json()["ended_on"] == "2026-04-01"
    history = client.get(f"{url}/history", headers=admin()).get_json()["items"]
    assert [ev.short_type(e["type"]) for e in history][-3:] == \
        ["agreement.signed", "agreement.activated", "agreement.terminated"]
    assert history[-1]["data"]["reason"] == "The hospital ended the pathway"   # staff read the reason
    assert "reason" not in pending_events(a["id"])[-1]["data"]                # the event does not carry it


def test_an_amendment_replaces_the_active_version_when_it_becomes_active(client, clock):
    voters = seed_region(members=1)
    v1 = active(client, voters, clock)
    url1 = f"{BASE}/{v1['id']}"
    r = client.post(f"{url1}/amendments", json={"summary": "Adds CKD patients"}, headers=admin())
    assert r.status_code == 201, r.get_json()
    v2 = r.get_json()
    assert (v2["version"], v2["previous_id"], v2["status"]) == (2, v1["id"], "draft")
    assert v2["title"] == v1["title"] and v2["summary"] == "Adds CKD patients"
    problem = _problem(client.post(f"{url1}/amendments", json={}, headers=admin()), 409)
    assert problem["amendment_id"] == v2["id"]
    _problem(client.post(f"{BASE}/{v2['id']}/amendments", json={}, headers=admin()), 409)  # a draft

    url2 = f"{BASE}/{v2['id']}"
    client.post(f"{url2}/mandate", headers=admin())
    client.put(f"{url2}/mandate/votes/{voters[0]}", json={"choice": "for"}, headers=gp(voters[0]))
    clock.advance(days=3)
    assert client.post(f"{url2}/sign", headers=admin()).get_json()["status"] == "active"

    old = client.get(url1, headers=admin()).get_json()
    assert old["status"] == "superseded" and old["ended_on"] == "2026-04-04"
    new = client.get(url2, headers=admin()).get_json()
    assert [(v["id"], v["version"], v["status"]) for v in new["versions"]] == \
        [(v1["id"], 1, "superseded"), (v2["id"], 2, "active")]
    assert event_types(v1["id"])[-1] == "agreement.superseded"
    assert [a["id"] for a in client.get(f"{BASE}?active_on=2026-04-05", headers=admin()).get_json()["items"]] \
        == [v2["id"]]
    assert [a["id"] for a in client.get(f"{BASE}?active_on=2026-04-02", headers=admin()).get_json()["items"]] \
        == [v1["id"]]
    for e in pending_events():
        ev.validate(e)


# -- auth and isolation --------------------------------------------------------------------------
def test_roles_and_region_isolation(client):
    voters = seed_region(members=1)
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    _problem(client.get(BASE), 401)
    _problem(client.post(BASE, json=body(), headers=gp(voters[0])), 403)
    _problem(client.post(BASE, json=body(), headers=bearer("integrator", REGION)), 403)
    _problem(client.post(f"{url}/mandate", headers=gp(voters[0])), 403)
    _problem(client.get(f"{url}/history", headers=gp(voters[0])), 403)
    _problem(client.post(f"{url}/mandate/close", headers=gp(voters[0])), 403)
    other = admin(OTHER_REGION)
    _problem(client.get(url, headers=other), 404)
    _problem(client.get(BASE, headers=other), 404)
    _problem(client.post(f"{url}/mandate", headers=other), 404)
    # the same id under another region's path is not found either
    _problem(client.get(f"/v1/regions/{OTHER_REGION}/agreements/{a['id']}", headers=other), 404)
    assert client.get(f"/v1/regions/{OTHER_REGION}/agreements", headers=other).get_json()["items"] == []
    assert client.get(url, headers=bearer("platform-admin")).status_code == 200
    _problem(client.get(url, headers=bearer("integrator", REGION)), 404)   # a draft: staff (and GPs) only
    _problem(client.get(f"{BASE}/a_doesnotexist", headers=admin()), 404)


def test_openapi_document_lists_the_agreement_paths(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    for path in ("/v1/regions/{region_id}/agreements", "/v1/regions/{region_id}/agreements/{agreement_id}",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/mandate",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/mandate/votes/{member_id}",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/mandate/close",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/sign",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/terminate",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/amendments",
                 "/v1/regions/{region_id}/agreements/{agreement_id}/history"):
        assert path in paths, path
    assert client.get("/docs").status_code == 200


def test_votes_committed_together_keep_their_own_answers_and_traces(client):
    """Group commit: one transaction for several votes, one event (and trace) per vote, errors per vote."""
    from hecht.errors import Forbidden, NotFound
    voters = seed_region(members=3)
    a = drafted(client)
    assert client.post(f"{BASE}/{a['id']}/mandate", headers=admin()).status_code == 201
    traces = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 5)]
    tickets = [handlers._Ticket(domain.CastVote(REGION, a["id"], voters[0], "for"), traces[0]),
               handlers._Ticket(domain.CastVote(REGION, a["id"], "m_stranger", "for"), traces[1]),
               handlers._Ticket(domain.CastVote(REGION, a["id"], voters[1], "against"), traces[2]),
               handlers._Ticket(domain.CastVote(OTHER_REGION, a["id"], voters[2], "for"), traces[3])]
    handlers.VoteBatcher._commit(tickets, handlers.Unit(agreements_db(), T0 + timedelta(hours=1)))
    assert [type(t.error) for t in tickets] == [type(None), Forbidden, type(None), NotFound]
    assert tickets[0].result.vote_of(voters[0]) == "for" and tickets[2].result.vote_of(voters[1]) == "against"
    votes = [e for e in pending_events(a["id"]) if e["sequence"] >= 3]
    assert [e["sequence"] for e in votes] == [3, 4]  # one commit: the agreement moved from 2 to 4
    assert tickets[0].result.sequence == 4 and tickets[0].result is tickets[2].result
    # a ballot's event carries no request trace (the voter's client chooses it) and no counts
    assert [e.get("traceparent") for e in votes] == [None, None]
    assert [e["data"]["mandate"]["cast"] for e in votes] == [1, 2]
    assert not any({"for", "against", "abstain"} & set(e["data"]["mandate"]) for e in votes)
    tally = client.get(f"{BASE}/{a['id']}/mandate", headers=admin()).get_json()
    assert tally["cast"] == 2
