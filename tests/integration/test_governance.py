"""Who mandates (issue 16) against the real stack.

The region's versioned mandate policy in the members service (who changed it, the council
seats, municipalities that strand members); the policy and body frozen into a vote in the
agreements service; the assembly, board and council electorates; the live-tally opt-in; the
secret ballot through every channel (API answers, events, webhook bodies, log lines); and the
care-council story.
"""
from __future__ import annotations

import json
import logging
import re

import pytest

from hecht import events as ev, outbox
from services.notify.domain import redact
from tests.conftest import bearer, ok as _ok, problem as _problem
from tests.support.members import members_client, members_db, riziv as _riziv
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    REGION, admin, agreements_db, apply_directly, client, clock, drafted, gp, member_event, pending_events,
    region_event)

BASE = f"/v1/regions/{REGION}/agreements"
POLICY = {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}
COUNTS = {"for", "against", "abstain", "threshold_met", "majority"}


def _vote(client, agreement_id: str, member: str, choice: str) -> dict:
    return _ok(client.put(f"{BASE}/{agreement_id}/mandate/votes/{member}", json={"choice": choice},
                          headers=gp(member)))


def _open(client, agreement_id: str) -> dict:
    return _ok(client.post(f"{BASE}/{agreement_id}/mandate", headers=admin()), 201)


def _region(policy: dict, sequence: int, municipalities=("Gent", "Merelbeke")) -> dict:
    return region_event(sequence=sequence, short="region.registered" if sequence == 1 else "region.updated",
                        policy={**POLICY, **policy}, municipalities=municipalities)


# ==============================================================================================
# The members service: the region's versioned policy
# ==============================================================================================
GENT = {"id": REGION, "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke", "Melle"]}
STAFF = bearer("region-admin", REGION, sub="staff:els")


@pytest.fixture
def members(hecht_env, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1000")
    return members_client(GENT)


def _enrol(members, n: int, municipality: str = "Gent", category: str | None = None, code: str = "003") -> str:
    form = {"given_name": f"An{n}", "family_name": f"Peeters{n}", "email": f"an{n}@praktijk.be", "language": "nl",
            "registration": {"scheme": "RIZIV", "number": _riziv(108000 + n, code)},
            "practice": {"name": f"Praktijk {n}", "postcode": "9000", "municipality": municipality}}
    if category:
        form["category"] = category
    mid = _ok(members.post(f"/v1/regions/{REGION}/members", json=form,
                                   headers=bearer("region-admin", REGION)), 201)["id"]
    _ok(members.post(f"/v1/regions/{REGION}/members/{mid}/approve", headers=STAFF))
    return mid


def test_each_policy_change_is_a_new_version_its_event_names_the_actor(members):
    region = _ok(members.get(f"/v1/regions/{REGION}", headers=STAFF))
    assert region["mandate_policy"] == {**POLICY, "body": "assembly", "seats": [], "live_tally": False,
                                        "max_proxies": 0, "trainees_vote": True, "reverify_months": 12,
                                        "unverified_leave_electorate": False, "version": 1}
    changed = _ok(members.patch(f"/v1/regions/{REGION}", headers=STAFF,
                                json={"mandate_policy": {"body": "board", "live_tally": True, "max_proxies": 1}}))
    policy = changed["mandate_policy"]
    assert (policy["body"], policy["live_tally"], policy["max_proxies"], policy["version"]) == ("board", True, 1, 2)
    assert policy["quorum"] == 0.5   # untouched fields keep their value
    renamed = _ok(members.patch(f"/v1/regions/{REGION}", headers=STAFF, json={"name": "ELZ Gent-Zuid"}))
    assert renamed["mandate_policy"]["version"] == 2   # not a policy change

    history = _ok(members.get(f"/v1/regions/{REGION}/history", headers=STAFF))["items"]
    updated = [e for e in history if e["type"] == "hecht.region.updated.v1"]
    assert updated[0]["data"]["mandate_policy"]["version"] == 2
    assert updated[0]["actor"]["sub"] == "staff:els" and "region-admin" in updated[0]["actor"]["roles"]
    for e in outbox.pending(members_db(), REGION):
        assert "actor" not in e and "_actor" not in json.dumps(e)   # published events never carry it
        ev.validate(e)


def test_a_policy_is_checked_field_by_field_and_council_seats_are_held_by_members(members):
    url = f"/v1/regions/{REGION}"
    p = _problem(members.patch(url, headers=STAFF, json={"mandate_policy": {"body": "council"}}), 422)
    assert "seats" in json.dumps(p["errors"])
    _problem(members.patch(url, headers=STAFF, json={"mandate_policy": {"body": "senate"}}), 422)
    _problem(members.patch(url, headers=STAFF, json={"mandate_policy": {"max_proxies": 99}}), 422)
    p = _problem(members.patch(url, headers=STAFF, json={"mandate_policy": {
        "body": "council", "seats": [{"member_id": "m_nobody", "cluster": "care providers"}]}}), 422)
    assert "m_nobody" in json.dumps(p["errors"])
    m = _enrol(members, 1)
    council = _ok(members.patch(url, headers=STAFF, json={"mandate_policy": {
        "body": "council", "seats": [{"member_id": m, "cluster": "care providers"}]}}))["mandate_policy"]
    assert council["seats"] == [{"member_id": m, "cluster": "care providers"}] and council["version"] == 2
    _problem(members.patch(url, headers=bearer("gp", REGION, m), json={"mandate_policy": {"quorum": 1}}), 403)


def test_removing_a_municipality_lists_the_members_it_strands_and_needs_a_confirmation(members):
    in_gent, in_melle = _enrol(members, 1), _enrol(members, 2, "Melle")
    url = f"/v1/regions/{REGION}"
    p = _problem(members.patch(url, headers=STAFF, json={"municipalities": ["Gent", "Merelbeke"]}), 409)
    assert p["reason"] == "members-affected" and "Melle" in p["detail"]
    assert p["affected"] == [{"member_id": in_melle, "municipality": "Melle", "status": "active"}]
    assert _ok(members.get(url, headers=STAFF))["municipalities"] == ["Gent", "Merelbeke", "Melle"]  # unchanged
    listed = lambda q: [m["id"] for m in _ok(members.get(f"{url}/members?{q}", headers=STAFF))["items"]]  # noqa: E731
    assert listed("outside_region=true") == []

    done = _ok(members.patch(url, headers=STAFF, json={"municipalities": ["Gent", "Merelbeke"],
                                                       "confirm_affected": True}))
    assert done["municipalities"] == ["Gent", "Merelbeke"]
    # Flagged to staff, not silently dropped: the members list shows who practises outside now.
    assert listed("outside_region=true") == [in_melle]
    assert listed("outside_region=false") == [in_gent]
    # Adding a municipality, or removing one nobody practises in, needs no confirmation.
    _ok(members.patch(url, headers=STAFF, json={"municipalities": ["Gent", "Merelbeke", "Lochristi"]}))
    _ok(members.patch(url, headers=STAFF, json={"municipalities": ["Gent", "Merelbeke"]}))


def test_a_policy_change_reaches_agreements_and_applies_to_later_votes_only(members, client):
    """The whole chain: PATCH in members → region.updated (outbox) → the agreements read model."""
    voters = [_enrol(members, n) for n in (1, 2, 3)]
    _ok(members.put(f"/v1/regions/{REGION}/members/{voters[0]}/roles", headers=STAFF,
                    json={"roles": ["member", "board"]}))
    apply_directly(*outbox.pending(members_db()))
    first = drafted(client)
    opened = _open(client, first["id"])["mandate"]
    assert (opened["body"], opened["policy_version"], opened["electorate_size"]) == ("assembly", 1, 3)

    _ok(members.patch(f"/v1/regions/{REGION}", headers=STAFF,
                      json={"mandate_policy": {"body": "board", "quorum": 1.0, "live_tally": True}}))
    apply_directly(*outbox.pending(members_db()))
    assert agreements_db().regions_view.find_one({"_id": REGION})["mandate_policy"]["version"] == 2

    # The open vote keeps its frozen policy: assembly of 3, quorum 0.5, secret.
    _vote(client, first["id"], voters[1], "for")
    tally = _ok(client.get(f"{BASE}/{first['id']}/mandate", headers=admin()))
    assert (tally["body"], tally["policy_version"], tally["quorum"], tally["electorate_size"]) == \
        ("assembly", 1, 0.5, 3)
    assert not COUNTS & set(tally)
    _vote(client, first["id"], voters[2], "for")
    closed = _ok(client.post(f"{BASE}/{first['id']}/mandate/close", headers=admin()))
    assert closed["status"] == "mandated"  # 2 of 3 reach the frozen quorum 0.5; the new 1.0 would fail

    # A vote opened later uses the new policy: the board only, live tally.
    second = drafted(client)
    m = _open(client, second["id"])["mandate"]
    assert (m["body"], m["policy_version"], m["electorate_size"], m["live_tally"]) == ("board", 2, 1, True)


# ==============================================================================================
# The agreements service: frozen policy, bodies, live tally, secrecy
# ==============================================================================================
def _seed(policy: dict, members: list[dict], municipalities=("Gent", "Merelbeke")) -> None:
    apply_directly(_region(policy, 1, municipalities),
                   *[member_event(m.pop("id"), "active", 2, **m) for m in members])


def test_changing_the_policy_while_a_vote_is_open_never_affects_that_vote(client):
    _seed({"quorum": 0.5, "approval_threshold": 0.5},
          [{"id": f"m_{i}"} for i in range(1, 5)] + [{"id": "m_board", "roles": ("member", "board")}])
    a = drafted(client)
    _open(client, a["id"])
    # Mid-vote the region tightens everything and switches body and tally mode.
    apply_directly(_region({"quorum": 1.0, "approval_threshold": 1.0, "voting_period_days": 2, "body": "board",
                            "live_tally": True, "version": 2}, 2))
    _vote(client, a["id"], "m_1", "for")
    _vote(client, a["id"], "m_2", "for")
    tally = _ok(client.get(f"{BASE}/{a['id']}/mandate", headers=admin()))
    assert (tally["policy_version"], tally["body"], tally["live_tally"], tally["electorate_size"]) == \
        (1, "assembly", False, 5)
    assert not COUNTS & set(tally)                                    # still secret: the frozen policy says so
    assert tally["deadline"].startswith("2026-03-16T09:00:00")        # 14 days, not 2
    _vote(client, a["id"], "m_3", "against")
    done = _ok(client.post(f"{BASE}/{a['id']}/mandate/close", headers=admin()))
    assert done["status"] == "mandated"                               # 3/5 ≥ 0.5 and 2/3 ≥ 0.5 (frozen)
    assert (done["mandate"]["for"], done["mandate"]["against"]) == (2, 1)
    for e in pending_events(a["id"]):
        ev.validate(e)
        if e["data"]["mandate"]:
            assert e["data"]["mandate"]["policy_version"] == 1


def test_board_electorate_trainees_and_members_outside_the_region(client):
    _seed({"trainees_vote": False},
          [{"id": "m_own"}, {"id": "m_trainee", "category": "gp-in-training"},
           {"id": "m_far", "municipality": "Brugge"}, {"id": "m_chair", "roles": ("member", "chair")}])
    a = drafted(client)
    _ok(client.post(f"{BASE}/{a['id']}/mandate", headers=admin()), 201)
    requested = [e for e in pending_events(a["id"]) if e["type"] == "hecht.agreement.mandate_requested.v1"][0]
    assert requested["data"]["electorate"] == ["m_chair", "m_own"]    # no trainee, nobody from Brugge
    assert requested["data"]["outside_region"] == ["m_far"]           # flagged, not silently dropped
    _problem(client.put(f"{BASE}/{a['id']}/mandate/votes/m_trainee", json={"choice": "for"},
                        headers=gp("m_trainee")), 403)

    apply_directly(_region({"body": "board", "trainees_vote": True, "version": 2}, 2))
    b = drafted(client)
    m = _open(client, b["id"])["mandate"]
    assert (m["body"], m["electorate_size"], m["trainees_vote"]) == ("board", 1, True)


def test_a_live_tally_shows_running_counts_only_where_the_policy_opts_in(client):
    _seed({"live_tally": True}, [{"id": f"m_{i}"} for i in range(1, 4)])
    a = drafted(client)
    _open(client, a["id"])
    mine = _vote(client, a["id"], "m_1", "against")["mandate"]
    assert (mine["for"], mine["against"], mine["live_tally"]) == (0, 1, True)
    tally = _ok(client.get(f"{BASE}/{a['id']}/mandate", headers=admin()))
    assert (tally["for"], tally["against"], tally["abstain"], tally["threshold_met"]) == (0, 1, 0, False)
    cast = [e for e in pending_events(a["id"]) if e["type"] == "hecht.agreement.vote_cast.v1"]
    assert cast[-1]["data"]["mandate"]["against"] == 1
    for e in pending_events(a["id"]):
        ev.validate(e)


def _observe(client, caplog, choices: list[str]) -> list:
    """Everything anyone but the voter can see while the vote is open, after each ballot: the
    admin's and another GP's tally, the agreement, the list, the events published (and so the
    webhook bodies, which are the redacted events), and the log lines; ids and times masked."""
    _seed({}, [{"id": f"m_{i}"} for i in range(1, 6)])
    a = drafted(client)
    _open(client, a["id"])
    url = f"{BASE}/{a['id']}"
    seen = []
    for i, choice in enumerate(choices, start=1):
        caplog.clear()
        before = {e["id"] for e in pending_events(a["id"])}
        trace = f"00-{i:032x}-{i:016x}-01"   # the voter's client chooses it: it must not reach an event
        _ok(client.put(f"{url}/mandate/votes/m_{i}", json={"choice": choice},
                       headers={**gp(f"m_{i}"), "traceparent": trace}))
        new = [e for e in pending_events(a["id"]) if e["id"] not in before]
        assert new and all("traceparent" not in e and trace[3:35] not in json.dumps(e) for e in new)
        answers = [_ok(client.get(f"{url}/mandate", headers=admin())),
                   _ok(client.get(f"{url}/mandate", headers=gp("m_5")))["cast"],
                   _ok(client.get(url, headers=admin()))["mandate"],
                   _ok(client.get(BASE, headers=admin()))["items"][0]["mandate"],
                   [e["data"] for e in _ok(client.get(f"{url}/history", headers=admin()))["items"]]]
        webhooks = [redact(e) for e in new]
        logs = [(r.name, r.getMessage(), {k: v for k, v in r.__dict__.items() if k not in _STD})
                for r in caplog.records]
        assert any(msg == "request" for _, msg, _ in logs), "the request log lines are compared too"
        seen.append(_mask(json.dumps([answers, [e["data"] for e in new], [w["data"] for w in webhooks],
                                      [sorted(e) for e in new], logs], sort_keys=True, default=str)))
    return seen


_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "ms", "taskName"}


def _mask(text: str) -> str:
    text = re.sub(r"\ba_[A-Za-z0-9]+", "a_X", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z?(\+00:00)?", "T", text)
    return re.sub(r'"(id|request_id|traceparent|trace_id|span_id)": "[^"]*"', r'"\1": "X"', text)


def test_while_open_no_channel_tells_one_choice_from_another(client, caplog):
    """Two runs, same voters in the same order, opposite choices: everything observable while
    the vote is open must be identical, so no comparison of successive values reveals a choice."""
    caplog.set_level(logging.DEBUG)
    yes = _observe(client, caplog, ["for", "for", "abstain", "for"])
    agreements_db().agreements.delete_many({})
    agreements_db()[outbox.OUTBOX].delete_many({})
    no = _observe(client, caplog, ["against", "against", "for", "against"])
    assert len(yes) == 4
    for step, (a, b) in enumerate(zip(yes, no), start=1):
        assert a == b, f"after ballot {step} something observable differs"
        assert '"against"' not in a and '"abstain": ' not in a


def test_the_counts_are_revealed_when_the_vote_closes(client):
    _seed({}, [{"id": f"m_{i}"} for i in range(1, 4)])
    a = drafted(client)
    _open(client, a["id"])
    _vote(client, a["id"], "m_1", "for")
    _vote(client, a["id"], "m_2", "against")
    last = _vote(client, a["id"], "m_3", "abstain")["mandate"]   # everyone voted: closes
    assert last["status"] == "rejected" and (last["for"], last["against"], last["abstain"]) == (1, 1, 1)
    final = [e for e in pending_events(a["id"]) if e["type"] == "hecht.agreement.mandate_rejected.v1"][0]
    assert {k: final["data"]["mandate"][k] for k in ("for", "against", "abstain", "threshold_met")} == \
        {"for": 1, "against": 1, "abstain": 1, "threshold_met": False}


# ==============================================================================================
# The story: a care council with four clusters
# ==============================================================================================
CLUSTERS = {"care providers": ["cp_1", "cp_2", "cp_3"], "welfare": ["wf_1", "wf_2", "wf_3"],
            "local government": ["lg_1", "lg_2"], "people with a care need": ["pn_1", "pn_2", "pn_3"]}


def test_story_a_care_council_mandates_only_when_every_clusters_majority_holds(client, clock):
    """ELZ Gent's zorgraad decides on a frail-elderly agreement: first the welfare cluster is
    split and the agreement is rejected although most of the council is for it; amended, it
    comes back and every cluster holds a majority: mandated."""
    seats = [{"member_id": m, "cluster": c} for c, ms in CLUSTERS.items() for m in ms]
    everyone = [m for ms in CLUSTERS.values() for m in ms]
    _seed({"body": "council", "seats": seats, "quorum": 0.5},
          [{"id": m} for m in everyone] + [{"id": "gp_not_seated"}])

    first = drafted(client, title="Frail elderly at home", theme="frail-elderly")
    opened = _open(client, first["id"])["mandate"]
    assert (opened["body"], opened["electorate_size"]) == ("council", 11)
    assert [(c["cluster"], c["seats"]) for c in opened["clusters"]] == \
        [("care providers", 3), ("local government", 2), ("people with a care need", 3), ("welfare", 3)]
    _problem(client.put(f"{BASE}/{first['id']}/mandate/votes/gp_not_seated", json={"choice": "for"},
                        headers=gp("gp_not_seated")), 403)
    ballots = {"cp_1": "for", "cp_2": "for", "cp_3": "for", "lg_1": "for", "lg_2": "for",
               "pn_1": "for", "pn_2": "for", "wf_1": "for", "wf_2": "against"}   # welfare: 1–1, a tie
    for m, choice in ballots.items():
        _vote(client, first["id"], m, choice)
    open_tally = _ok(client.get(f"{BASE}/{first['id']}/mandate", headers=admin()))
    assert all(not COUNTS & set(c) for c in open_tally["clusters"])     # secret per cluster too
    rejected = _ok(client.post(f"{BASE}/{first['id']}/mandate/close", headers=admin()))
    m = rejected["mandate"]
    assert rejected["status"] == "rejected" and (m["for"], m["against"]) == (8, 1)   # 8 of 9 for, still no
    assert {c["cluster"]: c["majority"] for c in m["clusters"]} == {
        "care providers": True, "local government": True, "people with a care need": True, "welfare": False}

    second = drafted(client, title="Frail elderly at home (with the social services)", theme="frail-elderly")
    _open(client, second["id"])
    ballots.update({"wf_2": "for", "wf_3": "against", "pn_3": "abstain"})   # welfare 2–1, care need 2–0–1
    for m, choice in ballots.items():
        _vote(client, second["id"], m, choice)
    mandated = _ok(client.get(f"{BASE}/{second['id']}", headers=admin()))   # all 11 voted: it closed itself
    assert mandated["status"] == "mandated" and mandated["mandate"]["close_reason"] == "everyone-voted"
    assert all(c["majority"] and c["quorum_met"] for c in mandated["mandate"]["clusters"])
    for e in pending_events(second["id"]):
        ev.validate(e)


# ==============================================================================================
# Proxies
# ==============================================================================================
def _proxy(client, agreement_id: str, giver: str, holder: str, as_member: str | None = None):
    return client.post(f"{BASE}/{agreement_id}/mandate/proxies", json={"giver": giver, "holder": holder},
                       headers=gp(as_member or giver))


def test_proxies_over_http_recorded_revocable_counted_once_and_limited(client):
    _seed({"max_proxies": 1}, [{"id": f"m_{i}"} for i in range(1, 6)])
    a = drafted(client)
    assert _open(client, a["id"])["mandate"]["max_proxies"] == 1
    url = f"{BASE}/{a['id']}/mandate/proxies"

    _problem(_proxy(client, a["id"], "m_1", "m_2", as_member="m_3"), 403)        # only the giver themself
    _problem(client.post(url, json={"giver": "m_1", "holder": "m_2"}, headers=admin()), 403)
    _problem(client.post(url, json={"giver": "m_1"}, headers=gp("m_1")), 422)
    given = _ok(_proxy(client, a["id"], "m_1", "m_2"), 201)
    assert given["holder"] == "m_2" and given["mandate"]["cast"] == 0
    assert _problem(_proxy(client, a["id"], "m_3", "m_2"), 409)["reason"] == "too-many-proxies"
    revoked = _ok(client.delete(f"{url}/m_1", headers=gp("m_1")))
    assert revoked["holder"] == "m_2"
    _problem(client.delete(f"{url}/m_1", headers=gp("m_1")), 404)
    _ok(_proxy(client, a["id"], "m_3", "m_2"), 201)                                 # m_2's slot is free again
    # each GP's own ballot shows their own proxies, and nobody else's
    own = {m: _ok(client.get(f"{BASE}/{a['id']}/mandate/votes/{m}", headers=gp(m))) for m in ("m_1", "m_2", "m_3")}
    assert (own["m_3"]["proxy_to"], own["m_3"]["proxies_for"]) == ("m_2", [])
    assert (own["m_2"]["proxy_to"], own["m_2"]["proxies_for"]) == (None, ["m_3"])
    assert (own["m_1"]["proxy_to"], own["m_1"]["proxies_for"]) == (None, [])

    voted = _vote(client, a["id"], "m_2", "for")["mandate"]
    assert voted["cast"] == 2                                                       # m_2's vote and m_3's share
    assert _problem(client.delete(f"{url}/m_3", headers=gp("m_3")), 409)["reason"] == "proxy-used"
    assert _problem(client.put(f"{BASE}/{a['id']}/mandate/votes/m_3", json={"choice": "against"},
                               headers=gp("m_3")), 409)["reason"] == "proxy-used"
    assert _ok(client.get(f"{BASE}/{a['id']}/mandate/votes/m_3", headers=gp("m_3")))["choice"] == "for"
    _vote(client, a["id"], "m_1", "against")
    done = _ok(client.post(f"{BASE}/{a['id']}/mandate/close", headers=admin()))["mandate"]
    assert (done["for"], done["against"], done["cast"]) == (2, 1, 3)                # each share once
    types = [e["type"] for e in pending_events(a["id"])]
    assert types.count("hecht.agreement.proxy_recorded.v1") == 2
    assert types.count("hecht.agreement.proxy_revoked.v1") == 1
    for e in pending_events(a["id"]):
        ev.validate(e)
        assert "m_2" not in json.dumps(e["data"].get("mandate"))                    # no voter in a tally


def test_no_proxies_where_the_policy_has_none(client):
    _seed({}, [{"id": "m_1"}, {"id": "m_2"}])
    a = drafted(client)
    _open(client, a["id"])
    assert _problem(_proxy(client, a["id"], "m_1", "m_2"), 409)["reason"] == "proxies-not-allowed"


def test_a_registrations_category_decides_eligibility_through_the_bodys_rule(members, client):
    """Categories travel in member events (not contact data); a trainee votes only where the
    region's policy says trainees vote, decided when each vote opens."""
    owner, trainee = _enrol(members, 1), _enrol(members, 2, category="gp-in-training")
    assert _ok(members.get(f"/v1/regions/{REGION}/members/{trainee}", headers=STAFF))["category"] == "gp-in-training"
    _ok(members.patch(f"/v1/regions/{REGION}", headers=STAFF, json={"mandate_policy": {"trainees_vote": False}}))
    events = outbox.pending(members_db())
    enrolled = [e for e in events if e["type"] == "hecht.member.enrolled.v1" and e["subject"] == trainee]
    assert enrolled[0]["data"]["category"] == "gp-in-training"
    apply_directly(*events)
    a = drafted(client)
    _open(client, a["id"])
    requested = [e for e in pending_events(a["id"]) if e["type"] == "hecht.agreement.mandate_requested.v1"][0]
    assert requested["data"]["electorate"] == [owner]
    assert requested["data"]["mandate"]["trainees_vote"] is False

    _ok(members.patch(f"/v1/regions/{REGION}", headers=STAFF, json={"mandate_policy": {"trainees_vote": True}}))
    apply_directly(*outbox.pending(members_db()))
    b = drafted(client)
    assert _open(client, b["id"])["mandate"]["electorate_size"] == 2


# ==============================================================================================
# Registration correction
# ==============================================================================================
def test_a_registration_is_corrected_with_the_sign_up_checks(members):
    trainee, other = _enrol(members, 1, category="gp-in-training", code="005"), _enrol(members, 2)
    url = f"/v1/regions/{REGION}/members/{trainee}"
    assert _ok(members.get(url, headers=STAFF))["registration"]["number"].endswith("005")
    recognised = _riziv(108001, "003")
    # The GP themself: in training (005) → recognised GP (003), same person (first eight digits).
    done = _ok(members.patch(url, headers=bearer("gp", REGION, trainee),
                             json={"registration": {"scheme": "RIZIV", "number": recognised}}))
    assert done["registration"] == {"scheme": "RIZIV", "number": recognised}
    p = _problem(members.patch(url, headers=STAFF, json={"registration": {"scheme": "RIZIV",
                                                                           "number": "10829059999"}}), 422)
    assert "registration" in p["errors"]                                        # bad check digits
    _problem(members.patch(url, headers=STAFF, json={"registration": {"scheme": "BIG",
                                                                       "number": "12345678901"}}), 422)  # NL in BE
    _problem(members.patch(url, headers=STAFF, json={"registration": {"scheme": "RIZIV",
                                                                       "number": _riziv(108001, "580")}}), 422)
    taken = _problem(members.patch(url, headers=STAFF, json={"registration": {
        "scheme": "RIZIV", "number": _riziv(108002, "004")}}), 409)               # another member's person
    assert "registration" in taken["errors"]
    _problem(members.patch(url, headers=bearer("gp", REGION, other),
                           json={"registration": {"scheme": "RIZIV", "number": recognised}}), 403)
    assert _ok(members.get(url, headers=STAFF))["registration"]["number"] == recognised
    history = _ok(members.get(f"{url}/history", headers=STAFF))["items"]
    assert history[-1]["type"] == "hecht.member.profile_updated.v1"
    assert recognised not in json.dumps([e["data"] for e in history])           # not in events
