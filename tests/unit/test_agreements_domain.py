"""The agreements domain: lifecycle, tally and outcome math, version chain, terms (pure, no I/O)."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from hecht import events as ev
from hecht.errors import Conflict, Forbidden, Invalid, InvalidTransition
from services.agreements import domain
from services.agreements.domain import Agreement, MandatePolicy, Tally, Terms, next_status

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
POLICY = MandatePolicy(quorum=0.5, approval_threshold=0.5, voting_period_days=14)
STATUSES = domain.STATUSES
ACTIONS = tuple(domain.LIFECYCLE)

# The lifecycle of DOMAIN.md, written out independently of the code's table.
LEGAL = {
    ("draft", "revise"): {"draft"},
    ("draft", "open_mandate"): {"in_consultation"},
    ("in_consultation", "vote"): {"in_consultation"},
    ("in_consultation", "close_mandate"): {"mandated", "rejected"},
    ("mandated", "sign"): {"mandated"},
    ("mandated", "activate"): {"active"},
    ("active", "amend"): {"active"},
    ("active", "mark_review_due"): {"active"},
    ("active", "expire"): {"expired"},
    ("active", "terminate"): {"terminated"},
    ("active", "supersede"): {"superseded"},
}
ALL_CELLS = [(s, a) for s in STATUSES for a in ACTIONS]


def terms(**overrides) -> Terms:
    base = dict(title="Diabetes type 2 care pathway", theme="chronic-care",
                partners=[{"name": "AZ Sint-Lucas", "kind": "hospital"}],
                commitments=[{"party": "region", "text": "GPs follow the shared protocol"}],
                municipalities=["Gent", "Merelbeke"], effective_from=date(2026, 4, 1),
                effective_until=date(2027, 3, 31), review_date=date(2026, 10, 1))
    return Terms(**{**base, **overrides})


def drafted(**overrides) -> Agreement:
    return Agreement.draft("a_1", "elz-gent", terms(**overrides), NOW)[0]


def voting(electorate=("m_1", "m_2", "m_3"), policy=POLICY) -> Agreement:
    a = drafted()
    a.open_mandate(list(electorate), "a_1:e", policy, NOW)
    return a


def in_status(status: str, *, signed: bool = False) -> Agreement:
    """An agreement brought to ``status`` through the domain's own steps."""
    a = voting(("m_1",))
    if status == "draft":
        return drafted()
    if status == "in_consultation":
        return voting()
    if status == "rejected":
        a.cast_vote("m_1", "against", NOW)
        return a
    a.cast_vote("m_1", "for", NOW)  # everyone voted: closes, passed
    if status == "mandated":
        if signed:
            a.sign(NOW, "admin")
        return a
    a.sign(NOW, "admin")
    a.activate(NOW + timedelta(days=30))
    if status == "active":
        return a
    if status == "expired":
        a.expire(NOW + timedelta(days=400))
    elif status == "terminated":
        a.terminate("the hospital withdrew", NOW + timedelta(days=40))
    elif status == "superseded":
        a.supersede(_active_amendment_of(a), NOW + timedelta(days=60))
    return a


def _active_amendment_of(a: Agreement) -> Agreement:
    amendment, _ = a.amend("a_2", {"title": "v2"}, NOW)
    amendment.open_mandate(["m_1"], "a_2:e", POLICY, NOW)
    amendment.cast_vote("m_1", "for", NOW)
    amendment.sign(NOW, "admin")
    amendment.activate(NOW + timedelta(days=60))
    return amendment


def perform(a: Agreement, action: str):
    later = NOW + timedelta(days=500)
    return {
        "revise": lambda: a.revise({"title": "Revised"}, NOW),
        "open_mandate": lambda: a.open_mandate(["m_1", "m_2"], "e", POLICY, NOW),
        "vote": lambda: a.cast_vote("m_1", "for", NOW),
        "close_mandate": lambda: a.close_mandate(NOW, "closed-early"),
        "sign": lambda: a.sign(NOW, "admin"),
        "activate": lambda: a.activate(NOW + timedelta(days=30)),
        "amend": lambda: a.amend("a_9", {}, NOW),
        "mark_review_due": lambda: a.mark_review_due(later),
        "expire": lambda: a.expire(later),
        "terminate": lambda: a.terminate("no longer needed", NOW),
        "supersede": lambda: a.supersede(_active_amendment_of(in_status("active")), NOW) if a.status != "active"
        else a.supersede(_active_amendment_of(a), NOW),
    }[action]()


# -- the lifecycle table -----------------------------------------------------------------------
def test_the_table_is_exactly_the_documented_lifecycle():
    table = {(s, a): set(t) for a, moves in domain.LIFECYCLE.items() for s, t in moves.items()}
    assert table == LEGAL
    assert len(ALL_CELLS) == 8 * 11


@pytest.mark.parametrize("status, action", sorted(LEGAL))
def test_legal_transitions_through_the_aggregate(status, action):
    a = in_status(status, signed=(action == "activate"))
    perform(a, action)
    assert a.status in LEGAL[(status, action)]


@pytest.mark.parametrize("status, action", [c for c in ALL_CELLS if c not in LEGAL])
def test_illegal_transitions_are_refused_naming_the_current_state(status, action):
    a = in_status(status, signed=True)
    before = (a.status, a.terms, a.mandate, a.signed_at, a.ended_on)
    with pytest.raises(InvalidTransition) as e:
        perform(a, action)
    assert e.value.extra["current_status"] == status
    assert e.value.detail.endswith(f"an agreement that is {status}")
    assert (a.status, a.terms, a.mandate, a.signed_at, a.ended_on) == before  # nothing changed
    with pytest.raises(InvalidTransition):
        next_status(status, action)


def test_close_mandate_has_two_outcomes_and_no_others():
    assert next_status("in_consultation", "close_mandate", "rejected") == "rejected"
    with pytest.raises(ValueError):
        next_status("in_consultation", "close_mandate")
    with pytest.raises(ValueError):
        next_status("in_consultation", "close_mandate", "active")


def test_sign_twice_and_activate_unsigned_are_conflicts():
    a = in_status("mandated")
    with pytest.raises(Conflict, match="signed before"):
        a.activate(NOW)
    a.sign(NOW, "admin")
    with pytest.raises(Conflict, match="already signed"):
        a.sign(NOW, "admin")


# -- tally and outcome -------------------------------------------------------------------------
def tally(for_=0, against=0, abstain=0, electorate=10, quorum=0.5, threshold=0.5) -> Tally:
    return Tally(electorate, for_, against, abstain, quorum, threshold)


def test_exact_threshold_passes():
    t = tally(for_=3, against=2, threshold=0.6)
    assert t.threshold_met and t.quorum_met and t.passed  # 3/5 is exactly 0.6, 5/10 exactly 0.5


def test_just_below_threshold_fails():
    t = tally(for_=5, against=4, threshold=5 / 9 + 1e-9)
    assert not t.threshold_met and not t.passed


def test_quorum_just_missed_fails_however_many_are_for():
    t = tally(for_=4, electorate=10, quorum=0.5)
    assert t.threshold_met and not t.quorum_met and not t.passed
    assert tally(for_=5, electorate=10, quorum=0.5).passed


def test_abstentions_count_for_turnout_and_against_approval():
    t = tally(for_=2, abstain=3, electorate=5, threshold=0.5)
    assert t.turnout == 1.0 and t.quorum_met
    assert not t.threshold_met  # 2 / (2 + 0 + 3) < 0.5


def test_all_abstain_is_rejected():
    t = tally(abstain=10, electorate=10)
    assert t.quorum_met and not t.threshold_met and not t.passed


def test_no_votes_never_pass_even_with_a_zero_quorum():
    t = tally(electorate=3, quorum=0.0, threshold=0.01)
    assert not t.quorum_met and not t.threshold_met and not t.passed and t.turnout == 0


def test_unanimous_approval_threshold_of_one():
    assert tally(for_=6, electorate=6, threshold=1.0).passed
    assert not tally(for_=5, abstain=1, electorate=6, threshold=1.0).passed


def test_electorate_of_one_closes_when_that_one_votes():
    a = voting(("m_1",))
    events = a.cast_vote("m_1", "for", NOW)
    assert [e.type for e in events] == ["agreement.vote_cast", "agreement.mandated"]
    assert a.status == "mandated" and a.mandate.close_reason == "everyone-voted"
    assert a.mandate.tally.turnout == 1.0


def test_the_frozen_electorate_still_counts_a_member_who_left_the_read_model():
    # m_3 was suspended after the vote opened: the electorate was frozen, so m_3 still counts
    # in the denominator and may still vote.
    a = voting(("m_1", "m_2", "m_3", "m_4"), MandatePolicy(0.75, 0.5, 14))
    a.cast_vote("m_1", "for", NOW)
    a.cast_vote("m_2", "for", NOW)
    assert a.mandate.electorate_size == 4 and not a.mandate.tally.quorum_met  # 2/4 < 0.75
    a.cast_vote("m_3", "against", NOW)
    assert a.mandate.tally.quorum_met and a.status == "in_consultation"
    a.close_mandate(NOW, "closed-early")
    assert a.status == "mandated" and a.mandate.tally.for_ == 2


def test_a_vote_can_be_changed_and_repeating_it_changes_nothing():
    a = voting()
    a.cast_vote("m_1", "for", NOW)
    a.cast_vote("m_1", "against", NOW)
    t = a.mandate.tally
    assert (t.for_, t.against, t.cast) == (0, 1, 1)
    assert a.cast_vote("m_1", "against", NOW) == []


def test_only_electors_vote_only_before_the_deadline_and_only_known_choices():
    a = voting()
    with pytest.raises(Forbidden):
        a.cast_vote("m_9", "for", NOW)
    with pytest.raises(Invalid):
        a.cast_vote("m_1", "maybe", NOW)
    with pytest.raises(Conflict, match="deadline"):
        a.cast_vote("m_1", "for", NOW + timedelta(days=14))
    assert a.vote_overdue(NOW + timedelta(days=14)) and not a.vote_overdue(NOW + timedelta(days=13))


def test_a_vote_needs_an_electorate():
    with pytest.raises(Conflict, match="no active members"):
        drafted().open_mandate([], "e", POLICY, NOW)


def test_the_deadline_and_policy_are_frozen_when_the_vote_opens():
    a = voting(policy=MandatePolicy(0.6, 0.7, 10))
    m = a.mandate
    assert m.deadline - m.opened_at == timedelta(days=10)
    assert (m.quorum, m.approval_threshold, m.electorate_size) == (0.6, 0.7, 3)


def test_events_carry_tallies_never_individual_choices():
    a = voting(("m_alice", "m_bob", "m_carol"))
    events = a.cast_vote("m_alice", "against", NOW) + a.cast_vote("m_bob", "for", NOW)
    for e in events:
        text = json.dumps(e.data)
        assert "m_alice" not in text and "m_bob" not in text and "electorate" not in e.data
    # the ballot is secret while open: turnout only, the counts come with the close
    assert [e.data["mandate"]["cast"] for e in events] == [1, 2]
    closed = a.cast_vote("m_carol", "abstain", NOW)
    assert [e.type for e in closed] == ["agreement.vote_cast", "agreement.mandated"] or \
        [e.type for e in closed] == ["agreement.vote_cast", "agreement.mandate_rejected"]
    final = closed[-1].data["mandate"]
    assert (final["for"], final["against"], final["abstain"]) == (1, 1, 1)


SECRET = ("for", "against", "abstain", "threshold_met")


def test_while_open_no_event_lets_anyone_deduce_a_choice():
    """Successive vote_cast events differ only in cast and turnout, whatever the choices."""
    runs = []
    for choices in (("for", "for"), ("against", "abstain"), ("for", "against")):
        a = voting(("m_a", "m_b", "m_c"))
        events = [e for m, c in zip(("m_a", "m_b"), choices) for e in a.cast_vote(m, c, NOW)]
        assert all(not set(SECRET) & set(e.data["mandate"]) for e in events)
        runs.append([json.dumps(e.data["mandate"], sort_keys=True) for e in events])
    assert runs[0] == runs[1] == runs[2]
    a = voting(("m_a", "m_b", "m_c"))
    a.cast_vote("m_a", "for", NOW)
    changed = a.cast_vote("m_a", "against", NOW)   # changing one's vote: turnout unchanged
    assert changed[0].data["mandate"]["cast"] == 1 and not set(SECRET) & set(changed[0].data["mandate"])


def test_the_mandate_requested_event_names_the_frozen_electorate():
    a = drafted()
    events = a.open_mandate(["m_2", "m_1", "m_2"], "e", POLICY, NOW)
    assert events[0].data["electorate"] == ["m_1", "m_2"]
    assert events[0].data["mandate"]["electorate_size"] == 2


# -- after the mandate -------------------------------------------------------------------------
def test_signing_after_the_start_date_activates_at_once():
    a = in_status("mandated")
    later = datetime(2026, 5, 1, tzinfo=timezone.utc)
    assert [e.type for e in a.sign(later, "admin")] == ["agreement.signed", "agreement.activated"]
    assert a.status == "active" and a.activated_on == date(2026, 5, 1)


def test_signing_before_the_start_date_waits_for_it():
    a = in_status("mandated")
    assert [e.type for e in a.sign(NOW, "admin")] == ["agreement.signed"]
    assert not a.due_for_activation(datetime(2026, 3, 31, 23, 59, tzinfo=timezone.utc))
    assert a.due_for_activation(datetime(2026, 4, 1, 0, 0, tzinfo=timezone.utc))
    a.activate(datetime(2026, 4, 9, tzinfo=timezone.utc))  # a worker that was down for a week
    assert a.activated_on == date(2026, 4, 1)  # in force from its start date regardless


def test_signing_after_the_period_ended_is_refused():
    a = in_status("mandated")
    with pytest.raises(Conflict, match="ended"):
        a.sign(datetime(2027, 4, 1, tzinfo=timezone.utc), "admin")


def test_expiry_is_after_the_last_day_and_the_review_is_due_once():
    a = in_status("active")
    assert not a.due_for_expiry(datetime(2027, 3, 31, 23, 0, tzinfo=timezone.utc))
    assert a.due_for_expiry(datetime(2027, 4, 1, 0, 0, tzinfo=timezone.utc))
    assert a.due_for_review(datetime(2026, 10, 1, tzinfo=timezone.utc))
    a.mark_review_due(datetime(2026, 10, 1, tzinfo=timezone.utc))
    assert not a.due_for_review(datetime(2026, 10, 2, tzinfo=timezone.utc))
    with pytest.raises(Conflict):
        a.mark_review_due(NOW)
    a.expire(datetime(2027, 4, 1, tzinfo=timezone.utc))
    assert a.ended_on == date(2027, 4, 1) and not a.due_for_review(NOW + timedelta(days=999))


def test_termination_needs_a_reason_which_stays_with_the_agreement_not_in_the_event():
    a = in_status("active")
    with pytest.raises(Invalid):
        a.terminate("  ", NOW)
    assert a.status == "active"
    events = a.terminate("the partner closed", NOW)
    assert a.termination_reason == "the partner closed" and a.ended_on == NOW.date()
    # staff free text: integrators read the event on Kafka (README "Personal data")
    assert "reason" not in events[0].data and "the partner closed" not in str(events[0].data)


# -- the version chain -------------------------------------------------------------------------
def test_an_amendment_is_the_next_version_in_draft_linked_to_the_active_one():
    v1 = in_status("active")
    v2, events = v1.amend("a_2", {"summary": "new text"}, NOW)
    assert (v2.version, v2.previous_id, v2.chain_id, v2.status) == (2, "a_1", "a_1", "draft")
    assert v2.terms.summary == "new text" and v2.terms.title == v1.terms.title
    assert events[0].type == "agreement.drafted" and events[0].data["previous_id"] == "a_1"
    assert v1.status == "active"  # the old version stays in force until the new one is


def test_the_chain_grows_one_version_per_amendment_and_supersedes_in_turn():
    v1 = in_status("active")
    v2 = _active_amendment_of(v1)
    v1.supersede(v2, NOW + timedelta(days=60))
    assert v1.status == "superseded" and v1.ended_on == v2.activated_on
    v3, _ = v2.amend("a_3", {}, NOW)
    assert (v3.version, v3.previous_id, v3.chain_id) == (3, v2.id, "a_1")


def test_only_the_active_amendment_of_a_version_supersedes_it():
    v1, other = in_status("active"), in_status("active")
    other.id = "a_other"
    stranger = _active_amendment_of(other)
    with pytest.raises(Conflict):
        v1.supersede(stranger, NOW)
    draft_amendment, _ = v1.amend("a_2", {}, NOW)
    with pytest.raises(Conflict):
        v1.supersede(draft_amendment, NOW)
    assert v1.status == "active"


# -- terms -------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, field", [
    ({"effective_until": date(2026, 3, 1)}, "effective_until"),
    ({"review_date": date(2026, 1, 1)}, "review_date"),
    ({"review_date": date(2028, 1, 1)}, "review_date"),
    ({"partners": []}, "partners"),
    ({"commitments": []}, "commitments"),
    ({"theme": "gardening"}, "theme"),
    ({"partners": [{"name": "X", "kind": "bakery"}]}, "partners"),
    ({"documents": [{"title": "Text", "url": "http://example.org/a.pdf"}]}, "documents"),
])
def test_terms_refuse_what_breaks_the_rules(changes, field):
    with pytest.raises(Invalid) as e:
        terms(**changes)
    assert field in e.value.errors


def test_terms_normalise_municipalities_and_accept_an_open_end():
    t = terms(municipalities=["Gent", " gent ", "Merelbeke", ""], effective_until=None, review_date=None)
    assert t.municipalities == ("Gent", "Merelbeke") and t.effective_until is None
    with pytest.raises(Invalid):
        t.revised({"colour": "blue"})


def test_every_event_the_lifecycle_emits_validates_against_its_schema():
    emitted = []
    a, events = Agreement.draft("a_1", "elz-gent", terms(), NOW)
    emitted += events
    emitted += a.revise({"title": "Revised"}, NOW)
    emitted += a.open_mandate(["m_1", "m_2"], "e", POLICY, NOW)
    emitted += a.cast_vote("m_1", "for", NOW) + a.cast_vote("m_2", "abstain", NOW)
    emitted += a.sign(NOW, "admin") + a.activate(NOW + timedelta(days=30))
    emitted += a.mark_review_due(NOW + timedelta(days=300))
    v2, drafted_v2 = a.amend("a_2", {}, NOW)
    emitted += drafted_v2
    emitted += a.terminate("replaced by a new approach", NOW)
    r = voting()
    r.cast_vote("m_1", "against", NOW)
    emitted += r.close_mandate(NOW, "closed-early")
    p, _ = Agreement.draft("a_3", "elz-gent", terms(), NOW)
    p.open_mandate(["m_1", "m_2", "m_3"], "e", MandatePolicy(0.5, 0.5, 14, max_proxies=1), NOW)
    emitted += p.give_proxy("m_1", "m_2", NOW) + p.revoke_proxy("m_1", NOW)
    e = in_status("active")
    emitted += e.expire(NOW + timedelta(days=500))
    s = in_status("active")
    emitted += s.supersede(_active_amendment_of(s), NOW)
    types = set()
    for i, event in enumerate(emitted, start=1):
        ev.validate(ev.build(event.type, region="elz-gent", subject="a_1", sequence=i, data=event.data,
                             source="/regions/elz-gent/agreements", validate_data=False))
        types.add(event.type)
    assert types == {t for t in (ev.short_type(x) for x in ev.known_types()) if t.startswith("agreement.")}


def test_the_schemas_refuse_an_individual_vote_in_the_data():
    a = voting()
    data = a.cast_vote("m_1", "for", NOW)[0].data
    leaky = dict(data, mandate=dict(data["mandate"], ballots={"m_1": "for"}))
    with pytest.raises(ev.InvalidEvent):
        ev.build("agreement.vote_cast", region="elz-gent", subject="a_1", sequence=4, data=leaky,
                 source="/regions/elz-gent/agreements")
    with pytest.raises(ev.InvalidEvent):
        ev.build("agreement.vote_cast", region="elz-gent", subject="a_1", sequence=4,
                 data=dict(data, voter="m_1"), source="/regions/elz-gent/agreements")


def test_an_open_ended_agreement_never_expires():
    a = voting(("m_1",))
    a.terms = a.terms.revised({"effective_until": None, "review_date": None})
    a.cast_vote("m_1", "for", NOW)
    a.sign(NOW, "admin")
    a.activate(NOW + timedelta(days=30))
    assert not a.due_for_expiry(NOW + timedelta(days=10_000))
    with pytest.raises(Conflict, match="no end date"):
        a.expire(NOW + timedelta(days=10_000))
    assert a.status == "active"
