"""Events across service lines: members → Kafka → the agreements read model, and agreements → Kafka."""
from __future__ import annotations

import json

from hecht import events as ev, topics
from hecht.config import settings
from services.agreements.repository import AgreementRepository
from tests.conftest import bearer
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    OTHER_REGION, REGION, admin, agreements_consumer, agreements_db, agreements_relay, client, clock, drafted,
    drain, gp, member_event, members_db, pending_events, produce_members_events, region_event, seed_region)

BASE = f"/v1/regions/{REGION}/agreements"


def _members_view(member_id: str) -> dict | None:
    return agreements_db().members_view.find_one({"_id": member_id})


def test_the_read_model_follows_member_and_region_events_through_kafka(client):
    produce_members_events(
        region_event(),
        member_event("m_ann", "pending", 1), member_event("m_ann", "active", 2),
        member_event("m_bob", "pending", 1),                                      # never approved
        member_event("m_cas", "active", 1), member_event("m_cas", "suspended", 2),
        member_event("m_dee", "active", 1), member_event("m_dee", "left", 2),
        member_event("m_eve", "active", 1),
        member_event("m_far", "active", 1, region=OTHER_REGION),                  # another region
        region_event(OTHER_REGION),
    )
    runner = agreements_consumer()
    try:
        drain(runner, lambda: agreements_db().members_view.count_documents({}) == 6
              and agreements_db().regions_view.count_documents({}) == 2)
        assert _members_view("m_cas")["status"] == "suspended"
        assert agreements_db().regions_view.find_one({"_id": REGION})["mandate_policy"]["voting_period_days"] == 14

        a = drafted(client)
        opened = client.post(f"{BASE}/{a['id']}/mandate", headers=admin())
        assert opened.status_code == 201, opened.get_json()
        assert opened.get_json()["mandate"]["electorate_size"] == 2
        requested = [e for e in pending_events(a["id"]) if e["type"] == "hecht.agreement.mandate_requested.v1"]
        assert requested[0]["data"]["electorate"] == ["m_ann", "m_eve"]

        # After the vote opened: m_ann is suspended, m_cas reinstated, a redelivery and a stale event arrive.
        suspended = member_event("m_ann", "suspended", 3)
        produce_members_events(suspended, suspended, member_event("m_cas", "active", 3, short="member.reinstated"),
                               member_event("m_cas", "left", 1))
        drain(runner, lambda: _members_view("m_ann")["status"] == "suspended"
              and _members_view("m_cas")["status"] == "active" and runner.poll_once(300) == 0)
        assert _members_view("m_cas")["sequence"] == 3  # the stale "left" (sequence 1) changed nothing

        # The electorate was frozen: the suspended member still counts and may still vote; m_cas may not.
        vote = client.put(f"{BASE}/{a['id']}/mandate/votes/m_ann", json={"choice": "for"}, headers=gp("m_ann"))
        assert vote.status_code == 200, vote.get_json()
        assert client.put(f"{BASE}/{a['id']}/mandate/votes/m_cas", json={"choice": "for"},
                          headers=gp("m_cas")).status_code == 403
        tally = client.get(f"{BASE}/{a['id']}/mandate", headers=admin()).get_json()
        assert tally["electorate_size"] == 2 and tally["cast"] == 1 and tally["turnout"] == 0.5
        assert "for" not in tally  # the ballot is secret while the vote is open
    finally:
        runner.close()


def test_a_new_voting_period_applies_to_votes_opened_after_it(client, clock):
    runner = agreements_consumer()
    try:
        produce_members_events(region_event(), member_event("m_ann", "active", 1),
                               region_event(sequence=2, short="region.updated",
                                            policy={"quorum": 0.6, "approval_threshold": 0.7,
                                                    "voting_period_days": 30}),
                               region_event(sequence=1))  # a late duplicate of the old state
        drain(runner, lambda: (agreements_db().regions_view.find_one({"_id": REGION}) or {}).get("sequence") == 2
              and _members_view("m_ann") is not None and runner.poll_once(300) == 0)
        a = drafted(client)
        m = client.post(f"{BASE}/{a['id']}/mandate", headers=admin()).get_json()["mandate"]
        assert (m["quorum"], m["approval_threshold"]) == (0.6, 0.7)
        assert m["deadline"].startswith("2026-04-01T09:00:00")  # 30 days after 2 March
    finally:
        runner.close()


def test_regions_and_gps_enrolled_in_the_members_service_make_the_electorate(client, hecht_env):
    """members API → its outbox relay → Kafka → the agreements consumer → a vote here."""
    from services.members.app import create_app as members_app
    from hecht import kafka as hk
    from hecht.outbox import Relay

    members = members_app().test_client()
    region = {"id": REGION, "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
              "municipalities": ["Gent", "Merelbeke"],
              "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 7}}
    assert members.post("/v1/regions", json=region, headers=bearer("platform-admin")).status_code == 201

    signed_up = []
    for i, number in enumerate(("10829059003", "12345625003")):
        r = members.post(f"/v1/regions/{REGION}/members", json={
            "given_name": f"Dokter{i}", "family_name": "Peeters", "email": f"gp{i}@example.org", "language": "nl",
            "registration": {"scheme": "RIZIV", "number": number},
            "practice": {"name": f"Praktijk {i}", "postcode": "9000", "municipality": "Gent"}},
            headers=bearer("region-admin", REGION))
        assert r.status_code == 201, r.get_json()
        signed_up.append(r.get_json()["id"])
    approved = signed_up[0]
    r = members.post(f"/v1/regions/{REGION}/members/{approved}/approve", headers=admin())
    assert r.status_code == 200, r.get_json()

    s = settings("members")
    relay = Relay(members_db(), s.topic(topics.MEMBERS), lambda: hk.producer(s), "members")
    assert relay.run_once() >= 4  # region.registered, 2 × member.signed_up, member.enrolled
    relay.close()

    runner = agreements_consumer()
    try:
        drain(runner, lambda: agreements_db().regions_view.find_one({"_id": REGION}) is not None
              and (_members_view(approved) or {}).get("status") == "active"
              and _members_view(signed_up[1]) is not None)
    finally:
        runner.close()
    view = agreements_db().regions_view.find_one({"_id": REGION})
    assert view["mandate_policy"]["voting_period_days"] == 7 and view["municipalities"] == ["Gent", "Merelbeke"]
    assert "personal" not in json.dumps(agreements_db().members_view.find_one({"_id": approved}), default=str)

    a = drafted(client)
    opened = client.post(f"{BASE}/{a['id']}/mandate", headers=admin()).get_json()
    assert opened["mandate"]["electorate_size"] == 1 and opened["mandate"]["deadline"].startswith("2026-03-09")
    requested = [e for e in pending_events(a["id"]) if e["type"] == "hecht.agreement.mandate_requested.v1"]
    assert requested[0]["data"]["electorate"] == [approved]


def test_every_agreement_event_reaches_kafka_valid_and_in_order(client, clock, topic_reader):
    voters = seed_region(members=2)
    a = drafted(client)
    url = f"{BASE}/{a['id']}"
    client.patch(url, json={"title": "Revised"}, headers={**admin(), "If-Match": '"1"'})
    client.post(f"{url}/mandate", headers=admin())
    for m in voters:
        client.put(f"{url}/mandate/votes/{m}", json={"choice": "for"}, headers=gp(m))
    client.post(f"{url}/sign", headers=admin())
    b = drafted(client, title="Second")

    relay = agreements_relay()
    assert relay.run_once() == 5   # the drafts' events never were in the outbox (issue 22)
    assert relay.run_once() == 0
    relay.close()
    records = topic_reader(settings("agreements").topic(topics.AGREEMENTS), until=lambda r: len(r) >= 5)
    by_subject: dict[str, list[int]] = {}
    for record in records:
        event = ev.decode(record.value)
        ev.validate(event)
        assert record.key == event["subject"].encode()
        assert dict(record.headers)["content-type"].startswith(b"application/cloudevents+json")
        by_subject.setdefault(event["subject"], []).append(event["sequence"])
        if event["type"] == "hecht.agreement.vote_cast.v1":
            assert not set(voters) & set(json.dumps(event).split('"'))
    # A draft never leaves the service: a's drafting and revision (1, 2) and b, still a draft,
    # are not on the topic; a's first event there is the vote opening, sequence 3.
    assert by_subject == {a["id"]: [3, 4, 5, 6, 7]}
    assert agreements_db().outbox.count_documents({}) == 0
    history = AgreementRepository(agreements_db()).history(a["id"])  # now served from the archive
    assert [e["sequence"] for e in history] == [1, 2, 3, 4, 5, 6, 7]


def test_the_worker_process_consumes_members_events_and_relays_agreement_events(client, topic_reader):
    """`hecht worker agreements` as it runs in production (threads, stop on a signal)."""
    import threading
    from hecht import worker
    from tests.conftest import wait_until
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=("agreements",), kwargs={"stop": stop, "metrics": False})
    runner.start()
    try:
        produce_members_events(region_event(), member_event("m_ann", "active", 1), member_event("m_bob", "active", 1))
        wait_until(lambda: agreements_db().members_view.count_documents({"status": "active"}) == 2, timeout=30,
                   message="the worker's consumer to build the read model")
        a = drafted(client)
        assert client.post(f"{BASE}/{a['id']}/mandate", headers=admin()).status_code == 201
        records = topic_reader(settings("agreements").topic(topics.AGREEMENTS), until=lambda r: len(r) >= 1)
        # The draft stayed in the service; the vote opening is the agreement's first event on the topic.
        assert [ev.decode(r.value)["type"] for r in records] == ["hecht.agreement.mandate_requested.v1"]
        assert ev.decode(records[0].value)["data"]["electorate"] == ["m_ann", "m_bob"]
    finally:
        stop.set()
        runner.join(timeout=60)
    assert not runner.is_alive()
