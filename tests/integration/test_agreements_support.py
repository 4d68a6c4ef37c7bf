"""Helpers and fixtures shared by the agreements integration tests (no tests of its own).

Events from the members service are built here in the docs/CONTRACTS.md shape
with ``hecht.events.build``; tests either feed them through the real Kafka
topic and the service's ConsumerRunner, or hand them to the same handler
directly when the Kafka leg is not what the test is about.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from kafka import KafkaProducer

from hecht import events as ev, kafka as hk, mongo, topics
from hecht.config import settings
from hecht.consumer import ConsumerRunner
from hecht.outbox import Relay
from services.agreements import handlers
from tests.conftest import bearer, wait_until

REGION = "elz-gent"
OTHER_REGION = "elz-brugge"
POLICY = {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


class FakeClock:
    """An injectable ``now()``: tests move time instead of sleeping."""

    def __init__(self, start: datetime = T0):
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kw) -> datetime:
        self.current += timedelta(**kw)
        return self.current

    def set(self, moment: datetime) -> datetime:
        self.current = moment
        return moment


def agreements_db():
    s = settings("agreements")
    return mongo.database(s.mongo_uri, s.database_name)


def members_db():
    s = settings("members")
    return mongo.database(s.mongo_uri, s.database_name)


def admin(region: str = REGION) -> dict:
    return bearer("region-admin", region)


def gp(member: str, region: str = REGION) -> dict:
    return bearer("gp", region, member)


def body(**overrides) -> dict:
    base = {"title": "Diabetes type 2 care pathway", "theme": "chronic-care",
            "summary": "Shared follow-up of type 2 diabetes between GPs and the hospital.",
            "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital", "identifier": "KBO-0123"}],
            "commitments": [{"party": "region", "text": "GPs follow the shared protocol"},
                            {"party": "AZ Sint-Lucas", "text": "Discharge letters within 24 h"}],
            "municipalities": ["Gent"], "effective_from": "2026-04-01", "effective_until": "2027-03-31",
            "review_date": "2026-10-01",
            "documents": [{"title": "Protocol", "url": "https://example.org/protocol.pdf"}]}
    return {**base, **overrides}


# -- members-service events in the contract's shape --------------------------------------------
def _schema_exists(short: str) -> bool:
    return (ev.EVENTS_DIR / f"{short}.v1.json").exists()


def region_event(region: str = REGION, sequence: int = 1, *, short: str = "region.registered",
                 municipalities=("Gent", "Merelbeke"), policy: dict | None = None) -> dict:
    data = {"region_id": region, "name": f"ELZ {region}", "country": "BE", "kind": "eerstelijnszone",
            "municipalities": list(municipalities), "mandate_policy": policy or POLICY}
    return ev.build(short, region=region, subject=region, sequence=sequence, data=data,
                    source=f"/regions/{region}", validate_data=_schema_exists(short))


MEMBER_EVENT = {"pending": "member.signed_up", "active": "member.enrolled", "suspended": "member.suspended",
                "left": "member.left", "rejected": "member.rejected"}


def member_event(member_id: str, status: str, sequence: int, region: str = REGION,
                 short: str | None = None, *, roles=("member",), category: str = "practice-owner",
                 municipality: str | None = "Gent") -> dict:
    """A member event as the members service publishes it: no personal data (issue 17)."""
    short = short or MEMBER_EVENT[status]
    data = {"member_id": member_id, "region_id": region, "status": status, "category": category,
            "roles": list(roles), "municipality": municipality, "capacity": None}
    return ev.build(short, region=region, subject=member_id, sequence=sequence, data=data,
                    source=f"/regions/{region}/members", validate_data=_schema_exists(short))


def apply_directly(*events: dict) -> None:
    """The consumer's handler without the Kafka leg (for tests about something else)."""
    handle = handlers.event_handler(agreements_db())
    for e in events:
        handle(e)


def seed_region(region: str = REGION, members: int = 3, policy: dict | None = None,
                prefix: str = "m_") -> list[str]:
    """A known region with ``members`` active GPs in the read model; returns their ids."""
    ids = [f"{prefix}{i:03d}" for i in range(1, members + 1)]
    apply_directly(region_event(region, policy=policy),
                   *[member_event(m, "active", 2, region) for m in ids])
    return ids


def produce_members_events(*events: dict) -> None:
    s = settings("members")
    p = KafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    for e in events:
        p.send(s.topic(topics.MEMBERS), key=e["subject"].encode(), value=ev.encode(e))
    p.flush()
    p.close()


def agreements_consumer() -> ConsumerRunner:
    s = settings("agreements")
    db = agreements_db()
    return ConsumerRunner(s, db, "agreements", [topics.MEMBERS], handlers.event_handler(db), retry_delay_s=0.01)


def drain(runner: ConsumerRunner, until, timeout: float = 60.0, message: str = "the read model"):
    return wait_until(lambda: runner.poll_once(200) >= 0 and until(), timeout=timeout, message=message)


def agreements_relay() -> Relay:
    s = settings("agreements")
    return Relay(agreements_db(), s.topic(topics.AGREEMENTS), lambda: hk.producer(s), "agreements")


def pending_events(agreement_id: str | None = None) -> list[dict]:
    """Events still in the outbox, in sequence order per agreement."""
    from hecht import outbox
    return outbox.pending(agreements_db(), agreement_id)


def event_types(agreement_id: str) -> list[str]:
    from services.agreements.repository import AgreementRepository
    return [ev.short_type(e["type"]) for e in AgreementRepository(agreements_db()).history(agreement_id)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(hecht_env, clock):
    from services.agreements.app import create_app
    return create_app({"HECHT_CLOCK": clock}).test_client()


def known_region(region: str = REGION) -> None:
    """The region in agreements' read model (as its region.registered event puts it), unless it is
    there already: agreements are drafted only in a region the members service announced."""
    from services.agreements.repository import ReadModel
    # Sequence 0: any region event a test applies afterwards (sequence 1 and up) replaces it.
    ReadModel(agreements_db()).put_region(region_event(region)["data"], 0)


def drafted(client, region: str = REGION, **overrides) -> dict:
    known_region(region)
    r = client.post(f"/v1/regions/{region}/agreements", json=body(**overrides), headers=admin(region))
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def mandated(client, voters: list[str], region: str = REGION, **overrides) -> dict:
    """Drafted, vote opened, everyone votes for: mandated."""
    a = drafted(client, region, **overrides)
    url = f"/v1/regions/{region}/agreements/{a['id']}"
    assert client.post(f"{url}/mandate", headers=admin(region)).status_code == 201
    for m in voters:
        r = client.put(f"{url}/mandate/votes/{m}", json={"choice": "for"}, headers=gp(m, region))
        assert r.status_code == 200, r.get_json()
    got = client.get(url, headers=admin(region)).get_json()
    assert got["status"] == "mandated", got
    return got


def active(client, voters: list[str], clock: FakeClock, region: str = REGION, **overrides) -> dict:
    """Mandated and signed after its start date: in force."""
    a = mandated(client, voters, region, **overrides)
    clock.set(datetime.combine(date.fromisoformat(a["effective_from"]), datetime.min.time(), timezone.utc)
              + timedelta(hours=9))
    r = client.post(f"/v1/regions/{region}/agreements/{a['id']}/sign", headers=admin(region))
    assert r.status_code == 200 and r.get_json()["status"] == "active", r.get_json()
    return r.get_json()
