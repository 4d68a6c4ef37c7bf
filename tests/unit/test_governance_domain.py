"""Who mandates (issue 16), pure rules: the council rule at its exact boundaries, the electorate
of each body, the frozen policy, the live-tally opt-in, and the region's versioned policy."""
from __future__ import annotations

from datetime import date, datetime, timezone
from fractions import Fraction

import pytest

from hecht import events as ev
from hecht.errors import Invalid
from services.agreements import domain as ad
from services.agreements.domain import (Agreement, ClusterTally, Electorate, MandatePolicy, Terms, council_passed,
                                        count_clusters, electorate_for, majority_holds)
from services.members import domain as md

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
TERMS = dict(title="Frail elderly", theme="frail-elderly", partners=[{"name": "WZC De Linde", "kind": "nursing-home"}],
             commitments=[{"party": "region", "text": "A named GP per resident"}], effective_from=date(2026, 4, 1))


def _agreement() -> Agreement:
    return Agreement.draft("a_1", "elz-gent", Terms(**TERMS), NOW)[0]


def _member(mid, *, status="active", roles=("member",), category="practice-owner", municipality="Gent"):
    return {"_id": mid, "status": status, "roles": list(roles), "category": category, "municipality": municipality}


# -- the council rule -------------------------------------------------------------------------
@pytest.mark.parametrize("for_, cast, threshold, holds", [
    (1, 2, 0.5, False),     # a tie is no majority, even at threshold 0.5 (for/cast = 1/2 exactly)
    (3, 6, 0.5, False),
    (2, 3, 0.5, True),      # 2/3 > 1/2
    (3, 5, 0.6, True),      # exactly 3/5 = 0.6: reaches the threshold (0.6 is 3/5, not a float below it)
    (5, 9, 0.6, False),     # 5/9 > 1/2 but below 3/5
    (2, 3, 2 / 3, True),    # the threshold's decimal spelling 0.6666666666666666 is just below 2/3
    (1, 1, 1.0, True),
    (0, 0, 0.5, False),     # no votes cast: no majority
])
def test_a_clusters_majority_is_more_than_half_and_at_least_the_threshold(for_, cast, threshold, holds):
    assert majority_holds(for_, cast, threshold) is holds


@pytest.mark.parametrize("cast, seats, quorum, met", [
    (2, 4, 0.5, True),      # exactly half: 2/4 = 1/2 reaches a quorum of 0.5
    (1, 4, 0.5, False),
    (2, 3, 0.7, False),     # 2/3 < 7/10
    (3, 5, 0.6, True),      # 3/5 exactly
    (0, 3, 0.0, False),     # nobody voted: never a quorum
])
def test_a_clusters_quorum_counts_its_own_seats_exactly(cast, seats, quorum, met):
    c = ClusterTally("care providers", seats, for_=cast)
    assert c.quorum_met(quorum) is met
    assert Fraction(c.cast, c.seats) == Fraction(cast, seats)


def test_every_cluster_must_hold_its_majority_and_quorum():
    good = [ClusterTally("care providers", 4, 3, 1), ClusterTally("welfare", 3, 2, 1, 0),
            ClusterTally("local government", 2, 2), ClusterTally("people with a care need", 3, 2, 0, 1)]
    assert council_passed(good, 0.5, 0.5)
    tie = good[:3] + [ClusterTally("people with a care need", 4, 1, 1)]          # 1 for, 1 against
    assert not council_passed(tie, 0.5, 0.5)
    no_quorum = good[:3] + [ClusterTally("people with a care need", 5, 2)]       # 2/5 < 1/2, unanimous
    assert not council_passed(no_quorum, 0.5, 0.5)
    assert not council_passed([], 0.5, 0.5)


def test_count_clusters_counts_only_each_clusters_seats():
    seats = {"m_1": "A", "m_2": "A", "m_3": "B"}
    counted = count_clusters(seats, {"m_1": "for", "m_3": "against", "m_9": "for"})
    assert counted == (ClusterTally("A", 2, 1, 0, 0), ClusterTally("B", 1, 0, 1, 0))


def test_a_council_vote_is_decided_per_cluster_not_by_the_overall_share():
    seats = (("c1", "care"), ("c2", "care"), ("c3", "care"), ("w1", "welfare"), ("w2", "welfare"))
    policy = MandatePolicy(0.5, 0.5, 14, body="council", seats=seats, version=3)
    a = _agreement()
    a.open_mandate(Electorate(tuple(m for m, _ in seats), seats), "e", policy, NOW)
    for member, choice in (("c1", "for"), ("c2", "for"), ("c3", "for"), ("w1", "against")):
        a.cast_vote(member, choice, NOW)
    # 3 of 4 votes cast are for (75 %), but welfare has no majority: rejected when it closes.
    events = a.close_mandate(NOW, "closed-early")
    assert a.status == "rejected" and events[0].type == "agreement.mandate_rejected"
    data = events[0].data["mandate"]
    assert data["body"] == "council" and data["policy_version"] == 3
    assert [(c["cluster"], c["majority"]) for c in data["clusters"]] == [("care", True), ("welfare", False)]
    ev.validate(ev.build(events[0].type, region="elz-gent", subject="a_1", sequence=9, data=events[0].data,
                         source="/regions/elz-gent/agreements"))


# -- electorates ------------------------------------------------------------------------------
ROWS = [_member("m_own"), _member("m_emp", category="employed"), _member("m_trainee", category="gp-in-training"),
        _member("m_far", municipality="Brugge"), _member("m_none", municipality=None),
        _member("m_board", roles=("member", "board")), _member("m_chair", roles=("member", "chair")),
        _member("m_susp", status="suspended", roles=("member", "board")), _member("m_pending", status="pending")]


def test_the_assembly_is_the_active_members_practising_in_the_region_and_flags_the_others():
    e = electorate_for(MandatePolicy(0.5, 0.5, 14), ROWS, ["Gent", "Merelbeke"])
    assert e.members == ("m_board", "m_chair", "m_emp", "m_own", "m_trainee")
    assert e.outside_region == ("m_far", "m_none")   # flagged, not silently dropped
    assert electorate_for(MandatePolicy(0.5, 0.5, 14), ROWS, ["GENT"]).members == e.members  # case-insensitive


def test_trainees_vote_only_where_the_policy_allows_it():
    e = electorate_for(MandatePolicy(0.5, 0.5, 14, trainees_vote=False), ROWS, ["Gent"])
    assert "m_trainee" not in e.members and "m_emp" in e.members


def test_the_board_is_the_active_members_holding_a_board_role():
    e = electorate_for(MandatePolicy(0.5, 0.5, 14, body="board"), ROWS, ["Gent"])
    assert e.members == ("m_board", "m_chair") and e.outside_region == ()


def test_a_council_is_its_seats_held_by_active_members():
    seats = (("m_own", "care"), ("m_susp", "care"), ("m_far", "welfare"), ("m_ghost", "welfare"))
    e = electorate_for(MandatePolicy(0.5, 0.5, 14, body="council", seats=seats), ROWS, ["Gent"])
    assert e.members == ("m_far", "m_own") and dict(e.seats) == {"m_own": "care", "m_far": "welfare"}


# -- the frozen policy and the live tally -----------------------------------------------------
def test_the_policy_in_force_is_frozen_into_the_vote_and_shown():
    a = _agreement()
    policy = MandatePolicy(0.25, 0.6, 7, body="board", live_tally=False, max_proxies=1, trainees_vote=False,
                           version=4)
    events = a.open_mandate(Electorate(("m_1", "m_2"), (), ("m_far",)), "e", policy, NOW)
    m = events[0].data["mandate"]
    assert {k: m[k] for k in ("body", "policy_version", "live_tally", "max_proxies", "trainees_vote")} == \
        {"body": "board", "policy_version": 4, "live_tally": False, "max_proxies": 1, "trainees_vote": False}
    assert events[0].data["outside_region"] == ["m_far"]
    assert a.mandate.quorum == 0.25 and a.mandate.deadline.day == 9


def test_the_ballot_is_secret_unless_the_frozen_policy_opts_in_to_a_live_tally():
    secret, live = _agreement(), _agreement()
    secret.open_mandate(["m_1", "m_2", "m_3"], "e", MandatePolicy(0.5, 0.5, 14), NOW)
    live.open_mandate(["m_1", "m_2", "m_3"], "e", MandatePolicy(0.5, 0.5, 14, live_tally=True), NOW)
    s = secret.cast_vote("m_1", "against", NOW)[0].data["mandate"]
    v = live.cast_vote("m_1", "against", NOW)[0].data["mandate"]
    assert not {"for", "against", "abstain", "threshold_met"} & set(s)
    assert (v["for"], v["against"], v["abstain"], v["threshold_met"], v["live_tally"]) == (0, 1, 0, False, True)
    for data, short in ((s, "agreement.vote_cast"), (v, "agreement.vote_cast")):
        body = {**secret.event_data(), "mandate": data}
        ev.validate(ev.build(short, region="elz-gent", subject="a_1", sequence=3, data=body,
                             source="/regions/elz-gent/agreements"))


def test_the_event_schema_refuses_counts_on_an_open_secret_vote():
    a = _agreement()
    a.open_mandate(["m_1", "m_2"], "e", MandatePolicy(0.5, 0.5, 14), NOW)
    data = a.cast_vote("m_1", "for", NOW)[0].data
    leaked = {**data, "mandate": {**data["mandate"], "for": 1, "against": 0, "abstain": 0, "threshold_met": True}}
    with pytest.raises(ev.InvalidEvent):
        ev.validate(ev.build("agreement.vote_cast", region="elz-gent", subject="a_1", sequence=3, data=leaked,
                             source="/regions/elz-gent/agreements"))


def test_a_policy_read_from_an_older_region_event_defaults_to_todays_behaviour():
    p = MandatePolicy.from_dict({"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14})
    assert (p.body, p.live_tally, p.max_proxies, p.trainees_vote, p.version, p.seats) == \
        ("assembly", False, 0, True, 1, ())
    assert ad.BOARD_ROLES == ("board", "chair", "secretary")


# -- the region's policy (members service) ----------------------------------------------------
def test_each_policy_change_is_a_new_version_and_no_change_is_none():
    p = md.MandatePolicy()
    assert p.version == 1
    q = p.changed({"quorum": 0.6})
    assert (q.quorum, q.version) == (0.6, 2)
    assert q.changed({"quorum": 0.6}).version == 2   # the same values again: no new version
    r = q.changed({"body": "council", "seats": [{"member_id": "m_1", "cluster": "care"}]})
    assert r.version == 3 and r.seats == (md.Seat("m_1", "care"),)
    assert r.as_dict()["seats"] == [{"member_id": "m_1", "cluster": "care"}]


@pytest.mark.parametrize("changes, field", [
    ({"body": "council"}, "seats"),
    ({"body": "senate"}, "body"),
    ({"body": "council", "seats": [{"member_id": "m_1", "cluster": "a"}, {"member_id": "m_1", "cluster": "b"}]},
     "seats"),
    ({"max_proxies": 9}, "max_proxies"),
])
def test_a_broken_policy_is_refused_field_by_field(changes, field):
    with pytest.raises(Invalid) as e:
        md.MandatePolicy().changed(changes)
    assert field in e.value.errors["mandate_policy"]


def test_a_region_event_carries_the_versioned_policy_and_validates():
    region = md.Region("elz-gent", "ELZ Gent", "BE", "eerstelijnszone", ["Gent", "Merelbeke"],
                       md.MandatePolicy().changed({"live_tally": True}))
    data = region.event_data()
    assert data["mandate_policy"]["version"] == 2 and data["mandate_policy"]["live_tally"] is True
    ev.validate(ev.build("region.updated", region="elz-gent", subject="elz-gent", sequence=2, data=data,
                         source="/regions/elz-gent"))
    assert region.removed_municipalities(["gent"]) == ["Merelbeke"]


# -- proxies ----------------------------------------------------------------------------------
def _proxied(max_proxies: int = 1, electors=("m_1", "m_2", "m_3", "m_4")) -> Agreement:
    a = _agreement()
    a.open_mandate(list(electors), "e", MandatePolicy(0.5, 0.5, 14, max_proxies=max_proxies), NOW)
    a.proxies = {}
    return a


def test_no_proxies_unless_the_frozen_policy_allows_them():
    from hecht.errors import Conflict
    with pytest.raises(Conflict, match="no proxies"):
        _proxied(0).give_proxy("m_1", "m_2", NOW)


def test_a_proxy_counts_once_when_the_holder_votes():
    a = _proxied()
    events = a.give_proxy("m_1", "m_2", NOW)
    assert events[0].type == "agreement.proxy_recorded" and events[0].data["proxy"] == {"giver": "m_1", "holder": "m_2"}
    assert not COUNTS_KEYS & set(events[0].data["mandate"])
    a.cast_vote("m_2", "against", NOW)
    assert a.ballots == {"m_1": "against", "m_2": "against"} and a.mandate.tally.cast == 2
    a.cast_vote("m_2", "for", NOW)              # the holder changes their mind: the share follows
    assert a.ballots == {"m_1": "for", "m_2": "for"} and a.mandate.tally.cast == 2
    ev.validate(ev.build(events[0].type, region="elz-gent", subject="a_1", sequence=3, data=events[0].data,
                         source="/regions/elz-gent/agreements"))


def test_a_proxy_is_revocable_until_its_share_is_cast_and_voting_yourself_withdraws_it():
    from hecht.errors import Conflict, NotFound
    a = _proxied()
    a.give_proxy("m_1", "m_2", NOW)
    assert a.revoke_proxy("m_1", NOW)[0].type == "agreement.proxy_revoked" and a.proxies == {}
    with pytest.raises(NotFound):
        a.revoke_proxy("m_1", NOW)
    a.give_proxy("m_1", "m_2", NOW)
    a.cast_vote("m_1", "abstain", NOW)          # the giver votes first: their own vote, the proxy is gone
    assert a.proxies == {} and a.ballots == {"m_1": "abstain"}
    a.give_proxy("m_3", "m_4", NOW)
    a.cast_vote("m_4", "for", NOW)
    with pytest.raises(Conflict, match="already voted"):
        a.revoke_proxy("m_3", NOW)
    with pytest.raises(Conflict, match="cast by m_4"):
        a.cast_vote("m_3", "against", NOW)
    assert a.mandate.tally.cast == 3


def test_a_holder_carries_at_most_n_and_proxies_do_not_chain():
    from hecht.errors import Conflict, Forbidden
    a = _proxied(1, ("m_1", "m_2", "m_3", "m_4", "m_5"))
    a.give_proxy("m_1", "m_2", NOW)
    with pytest.raises(Conflict, match="already carries 1"):
        a.give_proxy("m_3", "m_2", NOW)
    with pytest.raises(Conflict, match="passed on"):
        a.give_proxy("m_2", "m_4", NOW)            # m_2 carries one: cannot give theirs
    with pytest.raises(Conflict, match="passed on"):
        a.give_proxy("m_4", "m_1", NOW)            # m_1 gave theirs: cannot carry
    with pytest.raises(Conflict, match="revoke it first"):
        a.give_proxy("m_1", "m_3", NOW)
    with pytest.raises(Forbidden):
        a.give_proxy("m_4", "m_outsider", NOW)
    with pytest.raises(Invalid):
        a.give_proxy("m_4", "m_4", NOW)
    b = _proxied(2, ("m_1", "m_2", "m_3", "m_4"))
    b.give_proxy("m_1", "m_4", NOW)
    b.give_proxy("m_2", "m_4", NOW)
    b.cast_vote("m_3", "against", NOW)
    events = b.cast_vote("m_4", "for", NOW)          # 3 shares at once: everyone has now voted
    assert b.status == "mandated" and events[-1].data["mandate"]["for"] == 3
    with pytest.raises(Conflict, match="already voted"):
        _voted = _proxied(1)
        _voted.cast_vote("m_2", "for", NOW)
        _voted.give_proxy("m_1", "m_2", NOW)


COUNTS_KEYS = {"for", "against", "abstain", "threshold_met"}


def test_a_read_model_row_from_before_the_rule_still_counts_in_the_assembly():
    legacy = {"_id": "m_old", "status": "active"}          # stored before municipality was kept
    assert electorate_for(MandatePolicy(0.5, 0.5, 14), [legacy], ["Gent"]).members == ("m_old",)
