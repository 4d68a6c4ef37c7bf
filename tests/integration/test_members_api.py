"""The members service over HTTP against the real stack: enrolment, lifecycle, roles, capacity, events."""
from __future__ import annotations

import json
import threading

import pytest

from hecht import events as ev, mongo, outbox, topics
from hecht.config import settings
from services.members.worker import relay as members_relay
from tests.conftest import bearer

GENT = {"id": "elz-gent", "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke", "Melle"]}
UTRECHT = {"id": "zg-utrecht", "name": "Zorggroep Utrecht", "country": "NL", "kind": "zorggroep",
           "municipalities": ["Utrecht", "De Bilt"]}
ADMIN = bearer("region-admin", "elz-gent")


def riziv(n6: int, code: str = "003") -> str:
    """A valid (mod 97) RIZIV number built from the published check rule."""
    return f"{n6:06d}{97 - n6 % 97:02d}{code}"


def form(n: int = 1, **overrides) -> dict:
    body = {"given_name": f"An{n}", "family_name": f"Peeters{n}", "email": f"an{n}@praktijk.be", "language": "nl",
            "registration": {"scheme": "RIZIV", "number": riziv(108000 + n)},
            "practice": {"name": f"Praktijk {n}", "postcode": "9000", "municipality": "Gent"}}
    body.update(overrides)
    return body


@pytest.fixture
def app(hecht_env, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1000")
    from services.members.app import create_app
    return create_app()


@pytest.fixture
def client(app):
    c = app.test_client()
    for region in (GENT, UTRECHT):
        assert c.post("/v1/regions", json=region, headers=bearer("platform-admin")).status_code == 201
    return c


def db():
    s = settings("members")
    return mongo.database(s.mongo_uri, s.database_name)


def problem(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/problem+json"
    return r.json


def gp(member_id: str, region: str = "elz-gent") -> dict:
    return bearer("gp", region, member_id)


def sign_up(client, n: int = 1, region: str = "elz-gent", **overrides) -> str:
    """As a region-admin of the region: the only caller told the new member's id (issue 22)."""
    r = client.post(f"/v1/regions/{region}/members", json=form(n, **overrides),
                    headers=bearer("region-admin", region))
    assert r.status_code == 201, r.json
    return r.json["id"]


def url(member_id: str, tail: str = "", region: str = "elz-gent") -> str:
    return f"/v1/regions/{region}/members/{member_id}{tail}"


def active(client, n: int = 1, **overrides) -> str:
    m = sign_up(client, n, **overrides)
    assert client.post(url(m, "/approve"), headers=ADMIN).status_code == 200
    return m


# -- sign-up -----------------------------------------------------------------------------------
def test_public_sign_up_creates_a_pending_member(client):
    r = client.post("/v1/regions/elz-gent/members", json=form(
        1, email=" An.Peeters@Praktijk.BE ", registration={"scheme": "RIZIV", "number": "1-08290-59-005"},
        practice={"name": "Praktijk Zuid", "postcode": "9000", "municipality": "gent"}, category="gp-in-training"))
    assert r.status_code == 202, r.json
    assert r.json == {"status": "accepted"} and "Location" not in r.headers and "ETag" not in r.headers
    [item] = client.get("/v1/regions/elz-gent/members", headers=ADMIN).json["items"]
    got = client.get(url(item["id"]), headers=ADMIN)
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    m = got.json
    assert m["email"] == "An.Peeters@praktijk.be" and m["registration"] == {"scheme": "RIZIV", "number": "10829059005"}
    assert m["practice"]["municipality"] == "Gent" and m["category"] == "gp-in-training" and m["roles"] == []
    assert "email_key" not in m and "_outbox" not in m
    assert [e["type"] for e in outbox.pending(db(), m["id"])] == ["hecht.member.signed_up.v1"]
    # a sign-up without the portal: the contact record asks notify for the confirmation e-mail
    [record] = db()[outbox.OUTBOX].find({"subject": m["id"], outbox.RECORD_TOPIC: topics.MEMBER_CONTACTS})
    assert record[outbox.RECORD_VALUE]["notice"]["kind"] == "sign_up_confirm"
    # a region-admin of the region creating a member is told its id
    r = client.post("/v1/regions/elz-gent/members", json=form(2), headers=ADMIN)
    assert r.status_code == 201 and set(r.json) == {"id", "status"} and r.json["status"] == "pending"
    assert r.headers["Location"] == url(r.json["id"])


def test_sign_up_category_defaults_to_practice_owner_and_nl_schemes_work(client):
    m = sign_up(client, 1, region="zg-utrecht", registration={"scheme": "AGB", "number": "01-01-2345"},
                practice={"name": "Huisartsen De Bilt", "postcode": "3731ab", "municipality": "De Bilt"})
    got = client.get(url(m, region="zg-utrecht"), headers=bearer("region-admin", "zg-utrecht")).json
    assert got["category"] == "practice-owner" and got["practice"]["postcode"] == "3731 AB"
    assert got["registration"]["number"] == "01012345"
    sign_up(client, 2, region="zg-utrecht", registration={"scheme": "BIG", "number": "190 123 456 01"},
            practice={"name": "P", "postcode": "3511 AB", "municipality": "Utrecht"})


@pytest.mark.parametrize("overrides, field", [
    ({"registration": {"scheme": "RIZIV", "number": "10829058003"}}, ("registration", "number")),
    ({"registration": {"scheme": "RIZIV", "number": riziv(108290, "580")}}, ("registration", "number")),
    ({"registration": {"scheme": "RIZIV", "number": "49488014401"}}, ("registration", "number")),
    ({"registration": {"scheme": "BIG", "number": "19012345601"}}, ("registration", "scheme")),
    ({"practice": {"name": "P", "postcode": "3511 AB", "municipality": "Gent"}}, ("practice", "postcode")),
    ({"practice": {"name": "P", "postcode": "9000", "municipality": "Antwerpen"}}, ("practice", "municipality")),
    ({"email": "an.praktijk.be"}, ("email",)),
    ({"language": "de"}, ("language",)),
    ({"category": "specialist"}, ("category",)),
])
def test_sign_up_rules_answer_422_field_by_field(client, overrides, field):
    body = problem(client.post("/v1/regions/elz-gent/members", json=form(1, **overrides)), 422)
    errors = body["errors"]
    for key in field:
        errors = errors[key]
    assert errors and all(isinstance(m, str) for m in errors)
    assert db().members.count_documents({}) == 0


def test_sign_up_needs_every_field_and_an_existing_region(client):
    body = problem(client.post("/v1/regions/elz-gent/members", json={"email": "x@y.be"}), 422)
    assert {"given_name", "family_name", "language", "registration", "practice"} <= set(body["errors"])
    problem(client.post("/v1/regions/elz-nowhere/members", json=form(1)), 404)


def test_the_same_registration_or_email_twice_in_a_region_is_a_conflict_for_staff(client):
    sign_up(client, 1)
    # the same person with a later competence code (trainee → recognised GP) is the same registration
    again = form(2, registration={"scheme": "RIZIV", "number": riziv(108001, "004")})
    body = problem(client.post("/v1/regions/elz-gent/members", json=again, headers=ADMIN), 409)
    assert "registration" in body["errors"]
    body = problem(client.post("/v1/regions/elz-gent/members", json=form(2, email="AN1@praktijk.be"),
                               headers=ADMIN), 409)
    assert "email" in body["errors"]
    assert db().members.count_documents({}) == 1
    # another region is another body: the same GP may enrol there too
    other = {"id": "elz-melle", "name": "ELZ Melle", "country": "BE", "kind": "eerstelijnszone",
             "municipalities": ["Melle"]}
    assert client.post("/v1/regions", json=other, headers=bearer("platform-admin")).status_code == 201
    sign_up(client, 1, region="elz-melle", practice={"name": "P", "postcode": "9090", "municipality": "Melle"})


def test_concurrent_duplicate_sign_ups_enrol_once(app, client):
    results = []

    def attempt(i, headers):
        results.append(app.test_client().post("/v1/regions/elz-gent/members", headers=headers,
                                               json=form(7, email=f"dup{i}@praktijk.be")).status_code)

    def race(headers) -> None:
        threads = [threading.Thread(target=attempt, args=(i, headers)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    race(ADMIN)
    assert sorted(results) == [201] + [409] * 5
    assert db().members.count_documents({}) == 1
    # without a token: the same answer for all; one member, and its holder gets one e-mail
    db().members.delete_many({})
    db()[outbox.OUTBOX].delete_many({})
    results.clear()
    race({})
    assert results == [202] * 6
    [member] = db().members.find()
    notices = [r[outbox.RECORD_VALUE]["notice"]["kind"] for r in db()[outbox.OUTBOX].find(
        {"subject": member["_id"], outbox.RECORD_TOPIC: topics.MEMBER_CONTACTS})]
    assert sorted(notices) == ["sign_up_attempt", "sign_up_confirm"], notices


def test_sign_up_is_rate_limited_per_client_address(hecht_env, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "3")
    monkeypatch.setenv("HECHT_SIGNUP_RATE_WINDOW_S", "3600")
    from services.members.app import create_app
    c = create_app().test_client()
    assert c.post("/v1/regions", json=GENT, headers=bearer("platform-admin")).status_code == 201
    codes = [c.post("/v1/regions/elz-gent/members", json=form(i)).status_code for i in range(3)]
    assert codes == [202, 202, 202]
    r = c.post("/v1/regions/elz-gent/members", json=form(4))
    problem(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    # invalid attempts count too, and another address has its own budget
    problem(c.post("/v1/regions/elz-gent/members", json={}), 429)
    other = c.post("/v1/regions/elz-gent/members", json=form(5), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 202
    # the limit is on the public form only
    assert c.get("/v1/regions/elz-gent/members", headers=ADMIN).status_code == 200


# -- lifecycle and events ----------------------------------------------------------------------
def test_every_transition_over_http_emits_valid_events_in_order(client, topic_reader):
    m = sign_up(client, 1)
    steps = [
        ("post", "/approve", None, "active"),
        ("put", "/roles", {"roles": ["board", "secretary"]}, "active"),
        ("put", "/capacity", {"status": "limited", "since": "2026-01-05", "note": "only family"}, "active"),
        ("post", "/suspend", {"reason": "fees unpaid"}, "suspended"),
        ("post", "/reinstate", None, "active"),
        ("patch", "", {"language": "fr", "practice": {"municipality": "Melle"}}, "active"),
        ("post", "/leave", {"reason": "retired"}, "left"),
        ("delete", "", None, "erased"),
    ]
    for method, tail, body, status in steps:
        r = getattr(client, method)(url(m, tail), json=body, headers=ADMIN)
        assert r.status_code == 200, (tail, r.json)
        assert r.json["status"] == status
    relay = members_relay(settings("members"), db())
    # two regions, the sign-up, every step, and the contacts topic's tombstone (the contact
    # records still pending at the erasure were dropped with it)
    assert relay.run_once() == 2 + 1 + len(steps) + 1
    relay.close()
    records = topic_reader(settings("members").topic(topics.MEMBERS), until=lambda r: len(r) >= 11)
    events = [ev.decode(r.value) for r in records if r.key == m.encode()]
    for e in events:
        ev.validate(e)
        assert e["source"] == "/regions/elz-gent/members" and e["subject"] == m and e["region"] == "elz-gent"
    assert [ev.short_type(e["type"]) for e in events] == [
        "member.signed_up", "member.enrolled", "member.roles_changed", "member.capacity_changed",
        "member.suspended", "member.reinstated", "member.profile_updated", "member.left", "member.erased"]
    assert [e["sequence"] for e in events] == list(range(1, 10))
    data = [e["data"] for e in events]
    assert data[2]["roles"] == ["member", "board", "secretary"]
    # hecht.members carries no personal data and no free text (issue 17): no note, reason, language
    assert data[3]["capacity"] == {"status": "limited", "since": "2026-01-05"}
    assert data[6]["municipality"] == "Melle" and data[7]["roles"] == []
    assert not any(k in d for d in data for k in ("personal", "reason", "language")) and data[8]["status"] == "erased"
    history = client.get(url(m, "/history"), headers=ADMIN).json["items"]
    assert [e["id"] for e in history] == [e["id"] for e in events]
    assert not any("personal" in e["data"] for e in history)


def test_a_rejected_sign_up_keeps_its_reason(client):
    m = sign_up(client, 1)
    r = client.post(url(m, "/reject"), json={"reason": "practice outside the zone"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["status"] == "rejected" and r.json["reason"] == "practice outside the zone"
    problem(client.post(url(m, "/reject"), json={}, headers=ADMIN), 422)
    assert ev.short_type(outbox.pending(db(), m)[-1]["type"]) == "member.rejected"


@pytest.mark.parametrize("setup, method, tail, body, current", [
    ([], "post", "/reinstate", None, "pending"),
    ([], "post", "/suspend", {"reason": "x"}, "pending"),
    ([], "post", "/leave", None, "pending"),
    ([], "put", "/roles", {"roles": ["board"]}, "pending"),
    (["/approve"], "post", "/approve", None, "active"),
    (["/approve"], "post", "/reject", {"reason": "x"}, "active"),
    (["/approve"], "post", "/reinstate", None, "active"),
    (["/approve", "/suspend"], "post", "/suspend", {"reason": "x"}, "suspended"),
    (["/approve", "/suspend"], "post", "/approve", None, "suspended"),
    (["/approve", "/leave"], "post", "/reinstate", None, "left"),
    (["/approve", "/leave"], "put", "/capacity", {"status": "open"}, "left"),
    (["/approve", "/leave"], "patch", "", {"given_name": "Bea"}, "left"),
    (["/reject"], "post", "/approve", None, "rejected"),
    (["/reject"], "put", "/roles", {"roles": []}, "rejected"),
    (["erase"], "delete", "", None, "erased"),
    (["erase"], "post", "/approve", None, "erased"),
    (["erase"], "put", "/capacity", {"status": "open"}, "erased"),
])
def test_illegal_transitions_answer_409_naming_the_current_state(client, setup, method, tail, body, current):
    m = sign_up(client, 1)
    for step in setup:
        if step == "erase":
            assert client.delete(url(m), headers=ADMIN).status_code == 200
        else:
            assert client.post(url(m, step), json={"reason": "r"}, headers=ADMIN).status_code == 200
    version = db().members.find_one({"_id": m})["version"]
    body = problem(getattr(client, method)(url(m, tail), json=body, headers=ADMIN), 409)
    assert body["current_status"] == current and current in body["detail"]
    assert db().members.find_one({"_id": m})["version"] == version  # nothing written


def test_at_most_one_chair_per_region(client):
    a, b = active(client, 1), active(client, 2)
    assert client.put(url(a, "/roles"), json={"roles": ["chair"]}, headers=ADMIN).json["roles"] == ["member", "chair"]
    body = problem(client.put(url(b, "/roles"), json={"roles": ["board", "chair"]}, headers=ADMIN), 409)
    assert body["chair"] == a
    # re-stating the chair's own roles is fine; a suspended chair still holds the seat
    assert client.put(url(a, "/roles"), json={"roles": ["chair", "cra"]}, headers=ADMIN).status_code == 200
    assert client.post(url(a, "/suspend"), json={"reason": "r"}, headers=ADMIN).status_code == 200
    problem(client.put(url(b, "/roles"), json={"roles": ["chair"]}, headers=ADMIN), 409)
    # leaving frees the seat
    assert client.post(url(a, "/leave"), json={}, headers=ADMIN).json["roles"] == []
    assert client.put(url(b, "/roles"), json={"roles": ["chair"]}, headers=ADMIN).status_code == 200
    # the database enforces it too: a write that slips past the check is refused
    from services.members.repository import MemberRepository
    c = active(client, 3)
    repo = MemberRepository(db())
    member, version = repo.get("elz-gent", c)
    member.roles = ["member", "chair"]
    from hecht.errors import Conflict
    with pytest.raises(Conflict, match="already has a chair"):
        repo.save(member, version, [], None)
    problem(client.put(url(b, "/roles"), json={"roles": ["king"]}, headers=ADMIN), 422)


def test_capacity_by_the_gp_and_the_region_overview(client):
    ms = [active(client, i, practice={"name": f"P{i}", "postcode": "9000", "municipality": muni})
          for i, muni in enumerate(["Gent", "Gent", "Gent", "Merelbeke", "Gent"], start=1)]
    sign_up(client, 9)  # pending: not counted
    statuses = ["closed", "limited", "open", "closed", None]
    for m, status in zip(ms, statuses):
        if status:
            r = client.put(url(m, "/capacity"), json={"status": status, "since": "2026-02-01"}, headers=gp(m))
            assert r.status_code == 200 and r.json["capacity"]["status"] == status
    r = client.put(url(ms[0], "/capacity"), json={"status": "closed"}, headers=ADMIN)
    assert r.json["capacity"]["since"]  # defaults to today
    suspended = active(client, 10)
    client.put(url(suspended, "/capacity"), json={"status": "closed"}, headers=ADMIN)
    client.post(url(suspended, "/suspend"), json={"reason": "x"}, headers=ADMIN)  # not active: not counted
    problem(client.put(url(ms[1], "/capacity"), json={"status": "full"}, headers=ADMIN), 422)
    overview = client.get("/v1/regions/elz-gent/capacity", headers=ADMIN)
    assert overview.status_code == 200
    rows = {row["municipality"]: row for row in overview.json["municipalities"]}
    assert list(rows) == ["Gent", "Merelbeke", "Melle"]
    assert rows["Gent"] == {"municipality": "Gent", "open": 1, "limited": 1, "closed": 1, "unknown": 1,
                            "active": 4, "closed_share": 0.25}
    assert rows["Merelbeke"]["closed"] == 1 and rows["Merelbeke"]["closed_share"] == 1.0
    assert rows["Melle"]["active"] == 0 and rows["Melle"]["closed_share"] is None
    assert overview.json["totals"] == {"open": 1, "limited": 1, "closed": 2, "unknown": 1, "active": 5,
                                       "closed_share": 0.4}
    problem(client.get("/v1/regions/elz-gent/capacity", headers=gp(ms[0])), 403)


def test_list_filters_search_and_pagination(client):
    a = active(client, 1, given_name="Jan", family_name="Van den Broeck")
    b = active(client, 2, given_name="Marie", family_name="Dubois",
               practice={"name": "P", "postcode": "9820", "municipality": "Merelbeke"})
    c = sign_up(client, 3, given_name="Jan-Pieter", family_name="Claes")
    d = active(client, 4, given_name="Els", family_name="Janssens")
    client.put(url(b, "/roles"), json={"roles": ["board"]}, headers=ADMIN)
    client.put(url(a, "/capacity"), json={"status": "closed"}, headers=ADMIN)
    client.put(url(b, "/capacity"), json={"status": "open"}, headers=ADMIN)
    e = sign_up(client, 5)
    client.delete(url(e), headers=ADMIN)

    def ids(query: str) -> list[str]:
        r = client.get(f"/v1/regions/elz-gent/members?{query}", headers=ADMIN)
        assert r.status_code == 200, r.json
        return [m["id"] for m in r.json["items"]]

    assert ids("") == [a, b, c, d]  # stable (time-ordered) order; tombstones left out
    assert ids("status=pending") == [c] and ids("status=erased") == [e]
    assert ids("role=board") == [b] and ids("role=member") == [a, b, d]
    assert ids("municipality=merelbeke") == [b] and ids("municipality=Gent") == [a, c, d]
    assert ids("capacity=closed") == [a] and ids("capacity=unknown") == [c, d]
    assert ids("q=jan") == [a, c, d] and ids("q=JANS") == [d] and ids("q=broeck") == [a]  # word prefixes
    assert ids("q=van%20jan") == [a] and ids("q=pieter") == [c] and ids("q=.*") == []
    assert ids("status=active&capacity=open&role=board") == [b]
    seen, page = [], "/v1/regions/elz-gent/members?limit=3"
    while page:
        body = client.get(page, headers=ADMIN).json
        assert len(body["items"]) <= 3
        seen += [m["id"] for m in body["items"]]
        page = body["next"]
    assert seen == [a, b, c, d]
    problem(client.get("/v1/regions/elz-gent/members?status=gone", headers=ADMIN), 422)


# -- who may do what ----------------------------------------------------------------------------
def test_a_gp_manages_their_own_membership_only(client):
    me, other = active(client, 1), active(client, 2)
    mine = client.get(url(me), headers=gp(me))
    assert mine.status_code == 200 and mine.json["email"] == "an1@praktijk.be"
    r = client.patch(url(me), json={"given_name": "Anna", "email": "Anna@Example.be"}, headers=gp(me))
    assert r.status_code == 200 and (r.json["given_name"], r.json["email"]) == ("Anna", "Anna@example.be")
    assert client.get(url(me, "/history"), headers=gp(me)).status_code == 200
    for method, tail, body in (("get", "", None), ("patch", "", {"given_name": "X"}), ("put", "/capacity",
                               {"status": "open"}), ("post", "/leave", {}), ("delete", "", None),
                               ("get", "/history", None)):
        problem(getattr(client, method)(url(other, tail), json=body, headers=gp(me)), 403)
    for method, tail, body in (("post", "/approve", None), ("post", "/suspend", {"reason": "x"}),
                               ("put", "/roles", {"roles": ["chair"]}), ("post", "/reinstate", None)):
        problem(getattr(client, method)(url(me, tail), json=body, headers=gp(me)), 403)
    problem(client.get("/v1/regions/elz-gent/members", headers=gp(me)), 403)
    # refused before the body is read: a malformed body does not turn a 403 into a 422
    problem(client.patch(url(other), json={"email": "x", "language": "de"}, headers=gp(me)), 403)
    problem(client.post(url(me, "/reject"), json={}, headers=gp(me)), 403)
    problem(client.get(url(me)), 401)
    problem(client.post(url(me, "/approve")), 401)
    # the email is still unique when changed
    body = problem(client.patch(url(me), json={"email": "an2@praktijk.be"}, headers=gp(me)), 409)
    assert "email" in body["errors"]
    assert client.post(url(me, "/leave"), json={"reason": "moving"}, headers=gp(me)).json["status"] == "left"
    assert client.delete(url(me), headers=gp(me)).json["status"] == "erased"
    assert client.get(url(other), headers=bearer("platform-admin")).status_code == 200


def test_another_regions_tokens_see_nothing(client):
    m = active(client, 1)
    utrecht_admin = bearer("region-admin", "zg-utrecht")
    for method, tail, body in (("get", "", None), ("patch", "", {"given_name": "X"}), ("delete", "", None),
                               ("post", "/approve", None), ("post", "/suspend", {"reason": "x"}),
                               ("put", "/roles", {"roles": []}), ("put", "/capacity", {"status": "open"}),
                               ("get", "/history", None)):
        problem(getattr(client, method)(url(m, tail), json=body, headers=utrecht_admin), 404)
    problem(client.get("/v1/regions/elz-gent/members", headers=utrecht_admin), 404)
    problem(client.get("/v1/regions/elz-gent/capacity", headers=utrecht_admin), 404)
    # the same member id under the other region's path does not exist either
    problem(client.get(url(m, region="zg-utrecht"), headers=utrecht_admin), 404)
    # a GP token of another region, even with the right member id
    problem(client.get(url(m), headers=gp(m, region="zg-utrecht")), 404)
    assert client.get(url(m), headers=ADMIN).json["status"] == "active"


def test_if_match_guards_profile_and_capacity_updates(client):
    m = active(client, 1)
    tag = client.get(url(m), headers=ADMIN).headers["ETag"]
    ok = client.patch(url(m), json={"family_name": "Maes"}, headers={**gp(m), "If-Match": tag})
    assert ok.status_code == 200 and ok.headers["ETag"] != tag and ok.json["version"] == int(tag.strip('"')) + 1
    problem(client.patch(url(m), json={"family_name": "Stale"}, headers={**gp(m), "If-Match": tag}), 412)
    problem(client.put(url(m, "/capacity"), json={"status": "open"}, headers={**gp(m), "If-Match": tag}), 412)
    problem(client.post(url(m, "/suspend"), json={"reason": "x"}, headers={**ADMIN, "If-Match": tag}), 412)
    assert client.get(url(m), headers=ADMIN).json["family_name"] == "Maes"
    fresh = ok.headers["ETag"]
    assert client.put(url(m, "/capacity"), json={"status": "open"},
                      headers={**gp(m), "If-Match": fresh}).status_code == 200


def test_idempotency_keys_replay_sign_ups_and_actions(client):
    key = {"Idempotency-Key": "signup-1"}
    first = client.post("/v1/regions/elz-gent/members", json=form(1), headers={**key, **ADMIN})
    again = client.post("/v1/regions/elz-gent/members", json=form(1), headers={**key, **ADMIN})
    assert first.status_code == again.status_code == 201 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true" and db().members.count_documents({}) == 1
    m = first.json["id"]
    headers = {**ADMIN, "Idempotency-Key": "approve-1"}
    one, two = client.post(url(m, "/approve"), headers=headers), client.post(url(m, "/approve"), headers=headers)
    assert one.status_code == two.status_code == 200 and two.json == one.json and one.json["status"] == "active"
    assert set(one.json) >= {"id", "status", "roles", "version"} and "_outbox" not in one.json
    assert db().members.find_one({"_id": m})["version"] == 2  # applied once
    # without the key the retry is what it is: an illegal second approval
    problem(client.post(url(m, "/approve"), headers=ADMIN), 409)


def test_openapi_document_is_valid_and_describes_the_member_api(client):
    import jsonschema
    from schemathesis.specs.openapi.definitions import OPENAPI_31
    spec = client.get("/openapi.json").json
    jsonschema.Draft202012Validator(OPENAPI_31).validate(spec)
    paths = spec["paths"]
    for path in ("/v1/regions/{region_id}/members", "/v1/regions/{region_id}/members/{member_id}",
                 "/v1/regions/{region_id}/members/{member_id}/approve", "/v1/regions/{region_id}/capacity",
                 "/v1/regions/{region_id}/members/{member_id}/roles",
                 "/v1/regions/{region_id}/members/{member_id}/capacity",
                 "/v1/regions/{region_id}/members/{member_id}/history"):
        assert path in paths
    assert set(paths["/v1/regions/{region_id}/members/{member_id}"]) >= {"get", "patch", "delete"}
    signup = paths["/v1/regions/{region_id}/members"]["post"]["requestBody"]["content"]["application/json"]
    assert signup["schema"]["$ref"].endswith("/SignUp")
    assert "registration" in spec["components"]["schemas"]["SignUp"]["properties"]
    assert client.get("/docs").status_code == 200


def test_sign_ups_through_the_portal_are_limited_per_person_not_per_portal(hecht_env, monkeypatch):
    """The portal forwards the person's address; only a portal token makes the header count."""
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "2")
    monkeypatch.setenv("HECHT_SIGNUP_RATE_WINDOW_S", "3600")
    from services.members.app import create_app
    c = create_app().test_client()
    assert c.post("/v1/regions", json=GENT, headers=bearer("platform-admin")).status_code == 201
    portal = bearer("portal")

    def via_portal(i, person):
        return c.post("/v1/regions/elz-gent/members", json=form(i),
                      headers={**portal, "X-Hecht-Client": person}).status_code
    assert [via_portal(1, "203.0.113.7"), via_portal(2, "203.0.113.7")] == [202, 202]
    assert via_portal(3, "203.0.113.7") == 429          # that person's budget is spent ...
    assert via_portal(4, "198.51.100.9") == 202         # ... another person behind the portal has their own
    # without a portal token the header is ignored: the connection's address counts
    assert c.post("/v1/regions/elz-gent/members", json=form(5), headers={"X-Hecht-Client": "1"}).status_code == 202
    assert c.post("/v1/regions/elz-gent/members", json=form(6), headers={"X-Hecht-Client": "2"}).status_code == 202
    problem(c.post("/v1/regions/elz-gent/members", json=form(7), headers={"X-Hecht-Client": "3"}), 429)
    gp = bearer("gp", region="elz-gent", member="m_x")
    problem(c.post("/v1/regions/elz-gent/members", json=form(8), headers={**gp, "X-Hecht-Client": "4"}), 429)


@pytest.mark.parametrize("trusted", [False, True])
def test_sign_up_limit_behind_a_proxy_uses_the_forwarded_address_only_if_trusted(hecht_env, monkeypatch, trusted):
    """Behind an ingress (peer 10.0.0.5) every request shares the peer's address; only with
    HECHT_TRUSTED_PROXIES naming it does each forwarded client get its own budget."""
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1")
    monkeypatch.setenv("HECHT_SIGNUP_RATE_WINDOW_S", "3600")
    monkeypatch.setenv("HECHT_TRUSTED_PROXIES", "10.0.0.0/24" if trusted else "")
    from services.members.app import create_app
    c = create_app().test_client()
    assert c.post("/v1/regions", json=GENT, headers=bearer("platform-admin")).status_code == 201
    ingress = {"REMOTE_ADDR": "10.0.0.5"}
    codes = [c.post("/v1/regions/elz-gent/members", json=form(i), environ_base=ingress,
                    headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in (1, 2)]
    assert codes == ([202, 202] if trusted else [202, 429])
    # a forged header from a client that is not the proxy never buys a fresh budget
    direct = {"REMOTE_ADDR": "203.0.113.50"}
    assert c.post("/v1/regions/elz-gent/members", json=form(3), environ_base=direct,
                  headers={"X-Forwarded-For": "198.51.100.3"}).status_code == 202
    assert c.post("/v1/regions/elz-gent/members", json=form(4), environ_base=direct,
                  headers={"X-Forwarded-For": "198.51.100.4"}).status_code == 429
