"""Every change records who made it; history shows it, published events never carry it."""
from __future__ import annotations

from hecht import events as ev, outbox, topics
from hecht.config import settings
from services.members.worker import relay as members_relay
from tests.conftest import bearer
from tests.integration.test_members_api import ADMIN, app, client, db, form  # noqa: F401 - fixtures


def _member_id(n: int) -> str:
    """The member signed up with ``form(n)``, as the region's admin finds it (by family name)."""
    [item] = [i for i in db().members.find({"family_name": f"Peeters{n}"}, {"_id": 1})]
    return item["_id"]


def test_history_names_the_actor_of_each_change(client, topic_reader):  # noqa: F811
    new = client.post("/v1/regions/elz-gent/members", json=form(1), environ_base={"REMOTE_ADDR": "203.0.113.7"})
    other = client.post("/v1/regions/elz-gent/members", json=form(2), environ_base={"REMOTE_ADDR": "203.0.113.7"})
    third = client.post("/v1/regions/elz-gent/members", json=form(3), environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert new.status_code == other.status_code == third.status_code == 202
    m, other_id, third_id = (_member_id(n) for n in (1, 2, 3))   # an anonymous caller is not told the id
    admin = bearer("region-admin", "elz-gent", sub="staff:stf_anna")
    assert client.post(f"/v1/regions/elz-gent/members/{m}/approve", headers=admin).status_code == 200
    gp = bearer("gp", "elz-gent", member=m)
    assert client.put(f"/v1/regions/elz-gent/members/{m}/capacity", json={"status": "limited"},
                      headers=gp).status_code == 200

    items = client.get(f"/v1/regions/elz-gent/members/{m}/history", headers=ADMIN).json["items"]
    actors = [e["actor"] for e in items]
    signup = actors[0]
    assert signup["sub"] == "anonymous" and "203.0.113.7" not in str(signup) and len(signup["client"]) == 24
    assert actors[1:] == [{"sub": "staff:stf_anna", "roles": ["region-admin"]},
                          {"sub": f"member:{m}", "roles": ["gp"]}]
    # the same address gives the same hash, another address another one
    def first_actor(member_id):
        return client.get(f"/v1/regions/elz-gent/members/{member_id}/history",
                          headers=ADMIN).json["items"][0]["actor"]
    assert first_actor(other_id)["client"] == signup["client"]
    assert first_actor(third_id)["client"] != signup["client"]

    # published events carry no actor: neither the pending outbox reads nor Kafka
    assert all("actor" not in e and "_actor" not in e for e in outbox.pending(db(), m))
    relay = members_relay(settings("members"), db())
    relay.run_once()
    relay.close()
    records = topic_reader(settings("members").topic(topics.MEMBERS),
                           until=lambda r: sum(x.key == m.encode() for x in r) >= 3)
    sent = [ev.decode(r.value) for r in records if r.key == m.encode()]
    assert len(sent) >= 3 and all("actor" not in e and "_actor" not in e for e in sent)
    assert all("stf_anna" not in r.value.decode() for r in records)
    # and the history still names them once the events are archived
    archived = client.get(f"/v1/regions/elz-gent/members/{m}/history", headers=ADMIN).json["items"]
    assert [e["actor"] for e in archived] == actors


def test_a_sign_up_through_the_portal_is_recorded_as_the_visitor(client):  # noqa: F811
    portal = bearer("portal")
    client.post("/v1/regions/elz-gent/members", json=form(5), headers={**portal, "X-Hecht-Client": "203.0.113.9"})
    client.post("/v1/regions/elz-gent/members", json=form(6), environ_base={"REMOTE_ADDR": "203.0.113.9"})
    m, direct = _member_id(5), _member_id(6)
    first = [client.get(f"/v1/regions/elz-gent/members/{x}/history", headers=ADMIN).json["items"][0]["actor"]
             for x in (m, direct)]
    assert first[0]["sub"] == "anonymous" and first[0]["via"] == "portal"
    assert first[0]["client"] == first[1]["client"]   # the same visitor, whichever way they came
