"""Webhook deliveries against the real stack and a real HTTP receiver: signatures (verified
with the official ``standardwebhooks`` package), filters, redaction, retries, disabling,
410, Retry-After, replay, manual retry, ordering, isolation, leases, rotation and SSRF."""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from hecht import events as ev, outbox, topics
from hecht.config import settings
from services.notify import outbound
from services.notify.worker import DeliveryEngine
from tests.conftest import wait_until
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    AGREEMENTS, MEMBERS, REGION, Receiver, agreement_event, consume, deliveries, fast, integrator, member_event, notify_client, notify_db, notify_worker, produce, receiver, subscribe, vote_cast_event)

MEMBER_TYPES = ("member.signed_up", "member.enrolled", "member.rejected", "member.suspended", "member.reinstated",
                "member.left", "member.roles_changed", "member.capacity_changed", "member.profile_updated",
                "member.erased")


def _status(short: str) -> str:
    return {"member.signed_up": "pending", "member.rejected": "rejected", "member.suspended": "suspended",
            "member.left": "left", "member.erased": "erased"}.get(short, "active")


def _sample(agreement_id: str = "a_1", seq: int = 1, **kw) -> dict:
    """A published agreement event (a draft's would never reach notify: issue 22)."""
    return vote_cast_event(agreement_id, seq, **kw)


def _sub_doc(sub_id: str) -> dict:
    return notify_db().subscriptions.find_one({"_id": sub_id})


# -- signatures and body ----------------------------------------------------------------------
def test_a_delivery_is_a_signed_cloudevent_that_verifies_with_standardwebhooks(notify_client, notify_worker,
                                                                               receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries")
    event = _sample()
    consume(event)
    wait_until(lambda: receiver.count() == 1, message="the delivery")
    req = receiver.requests[0]
    payload = Webhook(sub["secret"]).verify(req["body"], req["headers"])
    assert payload == event
    assert req["headers"]["webhook-id"] == event["id"]
    assert req["headers"]["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Webhook(sub["secret"]).verify(req["body"].replace(b"a_1", b"a_2"), req["headers"])
    other = subscribe(notify_client, receiver.url("/other"), ["agreement.*"])
    with pytest.raises(WebhookVerificationError):
        Webhook(other["secret"]).verify(req["body"], req["headers"])
    d = wait_until(lambda: deliveries(sub["id"], status="succeeded"), message="succeeded")[0]
    assert d["attempt_count"] == 1 and d["attempts"][0]["status"] == 200
    assert d["attempts"][0]["response"] == "ok" and d["attempts"][0]["latency_ms"] >= 0


def test_event_type_filters_and_region_scope(notify_client, notify_worker, receiver):
    a = subscribe(notify_client, receiver.url("/a"), ["agreement.*"])
    b = subscribe(notify_client, receiver.url("/b"), ["member.capacity_changed"])
    c = subscribe(notify_client, receiver.url("/c"), ["*"])
    off = subscribe(notify_client, receiver.url("/off"), ["*"], enabled=False)
    elsewhere = subscribe(notify_client, receiver.url("/elsewhere"), ["*"], region="elz-brugge")
    notify_worker("deliveries")
    consume(member_event("member.enrolled", "m_1", 1), member_event("member.capacity_changed", "m_1", 2),
            _sample())
    wait_until(lambda: receiver.count("/c") == 3 and receiver.count("/a") == 1 and receiver.count("/b") == 1,
               message="filtered deliveries")
    time.sleep(0.3)
    assert [ev.short_type(b["type"]) for b in receiver.bodies("/a")] == ["agreement.vote_cast"]
    assert [ev.short_type(b["type"]) for b in receiver.bodies("/b")] == ["member.capacity_changed"]
    assert receiver.count("/off") == receiver.count("/elsewhere") == 0
    assert not deliveries(off["id"]) and not deliveries(elsewhere["id"])
    assert {s["id"] for s in (a, b, c)} == {d["subscription_id"] for d in notify_db().deliveries.find()}


def test_member_events_are_redacted_for_every_member_type(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["member.*"])
    notify_worker("deliveries")
    events = []
    for i, short in enumerate(MEMBER_TYPES, start=1):
        # as events written before issue 17 carried them (still on the topic until its retention)
        kw = {"status": _status(short), "email_addr": "an.peeters@huisarts.example", "legacy": True,
              "capacity": {"status": "limited", "since": "2026-01-01", "note": "bel of mail an.peeters@huisarts.example"}}
        if short in ("member.rejected", "member.suspended", "member.left"):
            kw["reason"] = "op verzoek"
        if short == "member.erased":
            kw.pop("capacity")
        events.append(member_event(short, f"m_{i}", 1, **kw))
    assert all("personal" in e["data"] for e in events[:-1])  # the input does carry personal data
    consume(*events)
    wait_until(lambda: receiver.count() == len(MEMBER_TYPES), message="all member deliveries")
    for req in receiver.requests:
        Webhook(sub["secret"]).verify(req["body"], req["headers"])
        text = req["body"].decode()
        body = json.loads(text)
        assert "personal" not in body["data"]
        assert "an.peeters" not in text and "Peeters" not in text and '"email"' not in text
        # staff free text is left out altogether, not only its addresses masked
        assert "op verzoek" not in text and "bel of mail" not in text and '"note"' not in text
        assert body["data"]["member_id"].startswith("m_")
    assert sorted(ev.short_type(b["type"]) for b in receiver.bodies()) == sorted(MEMBER_TYPES)
    stored = list(notify_db().event_copies.find())
    assert stored and "an.peeters" not in str(stored)  # notify's replay copy holds no contact data either
    assert "op verzoek" not in str(stored) and "bel of mail" not in str(stored)  # nor free text


# -- retries ----------------------------------------------------------------------------------
def test_retries_after_a_500_and_a_timeout_then_success(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    receiver.script = [{"status": 500, "body": "boom " * 200}, {"sleep": 2.5}, 200]
    notify_worker("deliveries")
    consume(_sample())
    d = wait_until(lambda: deliveries(sub["id"], status="succeeded"), timeout=20, message="eventual success")[0]
    assert [a["status"] for a in d["attempts"]] == [500, None, 200]
    assert "timeout" in d["attempts"][1]["error"]
    assert len(d["attempts"][0]["response"].encode()) <= 512 and d["attempts"][0]["response"].startswith("boom")
    times = [r["at"] for r in receiver.requests]
    assert times[1] - times[0] >= 0.3 * 0.8 - 0.05  # waited per the schedule (with jitter)
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1  # same id: receivers dedupe
    assert _sub_doc(sub["id"])["consecutive_failures"] == 0


def test_retry_after_on_429_is_honoured(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    receiver.script = [{"status": 429, "headers": {"Retry-After": "2"}}, 200]
    notify_worker("deliveries")
    consume(_sample())
    wait_until(lambda: deliveries(sub["id"], status="succeeded"), timeout=15, message="success after 429")
    times = [r["at"] for r in receiver.requests]
    assert len(times) == 2 and times[1] - times[0] >= 1.9


def test_an_endpoint_that_keeps_failing_is_disabled_with_an_event(notify_client, notify_worker, receiver,
                                                                 topic_reader):
    receiver.default = 500
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries", "relay")
    consume(*[_sample(f"a_{i}") for i in range(3)])
    wait_until(lambda: not _sub_doc(sub["id"])["enabled"], timeout=20, message="the subscription disabled")
    failed = deliveries(sub["id"], status="failed")
    assert len(failed) == 3 and all(d["attempt_count"] == 3 for d in failed)  # 1 + 2 retries each
    doc = _sub_doc(sub["id"])
    assert doc["consecutive_failures"] == 3 and "in a row" in doc["disabled_reason"]
    records = topic_reader(settings("notify").topic(topics.NOTIFY),
                           until=lambda rs: any(b"subscription.disabled" in r.value for r in rs))
    event = next(json.loads(r.value) for r in records if b"subscription.disabled" in r.value)
    ev.validate(event)
    assert event["data"] == {"subscription_id": sub["id"], "region_id": REGION, "reason": doc["disabled_reason"],
                             "failed_deliveries": 3}
    assert event["subject"] == sub["id"] and event["source"] == f"/regions/{REGION}/subscriptions"
    seen = receiver.count()
    consume(_sample("a_late"))
    time.sleep(0.5)
    assert receiver.count() == seen and not deliveries(sub["id"], event_type="agreement.vote_cast",
                                                       subject="a_late")
    r = notify_client.patch(f"/v1/regions/{REGION}/subscriptions/{sub['id']}", json={"enabled": True},
                            headers=integrator())
    assert r.status_code == 200 and r.json["enabled"] and r.json["consecutive_failures"] == 0
    assert r.json["disabled_reason"] is None


def test_410_gone_disables_at_once(notify_client, notify_worker, receiver):
    receiver.script = [410]
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries")
    consume(_sample())
    wait_until(lambda: not _sub_doc(sub["id"])["enabled"], message="disabled after 410")
    d = deliveries(sub["id"])[0]
    assert d["status"] == "failed" and d["attempt_count"] == 1
    assert "410" in _sub_doc(sub["id"])["disabled_reason"]
    events = outbox.history(notify_db(), sub["id"])  # written with the change, in one transaction
    assert [e["type"] for e in events] == ["hecht.subscription.disabled.v1"]
    assert events[0]["data"]["failed_deliveries"] == 1


def test_manual_retry_of_a_failed_delivery(notify_client, notify_worker, receiver):
    receiver.default = 503
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries")
    consume(_sample())
    d = wait_until(lambda: deliveries(sub["id"], status="failed"), timeout=15, message="failed")[0]
    base = f"/v1/regions/{REGION}/subscriptions/{sub['id']}/deliveries"
    receiver.default = 200
    r = notify_client.post(f"{base}/{d['_id']}/retry", headers=integrator())
    assert r.status_code == 202, r.json
    wait_until(lambda: deliveries(sub["id"], status="succeeded"), message="retried delivery")
    got = notify_client.get(f"{base}/{d['_id']}", headers=integrator()).json
    assert got["status"] == "succeeded" and [a["status"] for a in got["attempts"]] == [503, 503, 503, 200]
    assert notify_client.post(f"{base}/nope/retry", headers=integrator()).status_code == 404
    consume(_sample("a_2"))
    pending = wait_until(lambda: deliveries(sub["id"], subject="a_2"), message="second delivery")[0]
    notify_db().deliveries.update_one({"_id": pending["_id"]}, {"$set": {
        "status": "pending", "next_attempt_at": datetime.now(timezone.utc) + timedelta(hours=1)}})
    assert notify_client.post(f"{base}/{pending['_id']}/retry", headers=integrator()).status_code == 409


def test_replay_since_a_time_from_notifys_own_copy(notify_client, notify_worker, receiver):
    now = datetime.now(timezone.utc)
    old = [vote_cast_event(f"a_{h}", 1) for h in range(3)]
    for h, e in enumerate(old):
        e["time"] = (now - timedelta(hours=3 - h)).isoformat().replace("+00:00", "Z")  # 3 h, 2 h, 1 h ago
    member = member_event("member.enrolled", "m_1", 1)
    member["time"] = (now - timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    consume(*old, member)  # before the subscription existed: nothing to deliver then
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries")
    path = f"/v1/regions/{REGION}/subscriptions/{sub['id']}/replay"
    r = notify_client.post(path, json={"since": (now - timedelta(hours=2, minutes=30)).isoformat()},
                           headers=integrator())
    assert r.status_code == 202, r.json
    assert r.json == {"matched": 2, "created": 2, "reopened": 0, "truncated": False}
    wait_until(lambda: receiver.count() == 2, message="replayed deliveries")
    assert sorted(b["subject"] for b in receiver.bodies()) == ["a_1", "a_2"]
    wait_until(lambda: len(deliveries(sub["id"], status="succeeded")) == 2, message="both succeeded")
    again = notify_client.post(path, json={"since": (now - timedelta(hours=2, minutes=30)).isoformat(),
                                           "until": (now - timedelta(minutes=90)).isoformat()}, headers=integrator())
    assert again.json == {"matched": 1, "created": 0, "reopened": 1, "truncated": False}
    wait_until(lambda: receiver.count() == 3, message="the replay of a delivered event")
    assert receiver.bodies()[-1]["subject"] == "a_1"
    for req in receiver.requests:
        Webhook(sub["secret"]).verify(req["body"], req["headers"])
    bad = notify_client.post(path, json={"since": "yesterday"}, headers=integrator())
    assert bad.status_code == 422 and "since" in bad.json["errors"]


# -- ordering, isolation, leases --------------------------------------------------------------
def test_per_aggregate_order_holds_while_an_event_is_retried(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["member.*"])
    receiver.script = [500]  # the very first request fails
    consume(member_event("member.signed_up", "m_1", 1, status="pending"),
            member_event("member.enrolled", "m_1", 2), member_event("member.roles_changed", "m_1", 3),
            member_event("member.signed_up", "m_2", 1, status="pending"))
    notify_worker("deliveries")
    wait_until(lambda: len(deliveries(sub["id"], status="succeeded")) == 4, timeout=15, message="all delivered")
    order = [(b["subject"], b["sequence"]) for b in receiver.bodies()]
    # The first request (whichever aggregate it was for) failed and was retried before that
    # aggregate's next event: per subject the sequences never go back.
    for subject, expected in (("m_1", [1, 2, 3]), ("m_2", [1])):
        seqs = [s for subj, s in order if subj == subject]
        assert seqs == sorted(seqs) and sorted(set(seqs)) == expected, (subject, seqs)
    assert len(order) == 5  # four events, one of them twice


def test_a_slow_endpoint_does_not_delay_the_others(notify_client, notify_worker, monkeypatch):
    monkeypatch.setenv("HECHT_WEBHOOK_TIMEOUT_S", "5")
    slow, quick = Receiver({"sleep": 1.2, "status": 200}), Receiver()
    try:
        s_slow = subscribe(notify_client, slow.url(), ["member.*"])
        subscribe(notify_client, quick.url(), ["member.*"])
        consume(*[member_event("member.enrolled", f"m_{i}", 1) for i in range(8)])
        start = time.time()
        notify_worker("deliveries")
        wait_until(lambda: quick.count() == 8, timeout=10, message="the quick endpoint served")
        assert slow.count() <= 2  # at most the per-endpoint cap in flight
        wait_until(lambda: len(deliveries(s_slow["id"], status="succeeded")) >= 4, timeout=15,
                   message="the slow endpoint progressing")
        starts = sorted(r["at"] for r in slow.requests)
        assert all(starts[i + 2] - starts[i] >= 1.0 for i in range(len(starts) - 2))  # never 3 at once
    finally:
        slow.close()
        quick.close()


def test_two_engines_never_send_the_same_delivery(notify_client, fast, receiver):
    from services.notify.worker import Tuning
    sub = subscribe(notify_client, receiver.url(), ["member.*"])
    consume(*[member_event("member.enrolled", f"m_{i}", 1) for i in range(30)])
    s = settings("notify")
    tuning = Tuning(workers=8, per_endpoint=4, poll_s=0.02)
    engines = [DeliveryEngine(s, notify_db(), tuning) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, args=(stop,), daemon=True) for e in engines]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(deliveries(sub["id"], status="succeeded")) == 30, timeout=30, message="all sent")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert {d["attempt_count"] for d in deliveries(sub["id"])} == {1}


def test_a_dead_workers_lease_runs_out_and_the_delivery_goes_out(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    consume(_sample())
    d = deliveries(sub["id"])[0]
    now = datetime.now(timezone.utc)
    from services.notify.repository import DeliveryRepository
    # a worker claims the attempt and dies holding it
    assert DeliveryRepository(notify_db()).claim([d], "dead-worker", now, now + timedelta(seconds=1.5)) == {d["_id"]}
    assert DeliveryRepository(notify_db()).claim([d], "another", now, now + timedelta(seconds=9)) == set()
    notify_worker("deliveries")
    time.sleep(0.8)
    assert receiver.count() == 0  # the dead worker's lease still holds
    wait_until(lambda: receiver.count() == 1, timeout=10, message="delivery after the lease ran out")
    done = wait_until(lambda: deliveries(sub["id"], status="succeeded"), message="recorded")[0]
    # claimed by the dead worker (1), taken over (2), recorded (3); the lease is over
    assert done["claim_seq"] == 3 and done["attempt_count"] == 1 and "lease_until" not in done
    assert receiver.count() == 1


def test_an_outcome_after_the_lease_was_taken_over_is_not_recorded(notify_client, fast, receiver):
    from services.notify.repository import DeliveryRepository
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    consume(_sample())
    [d] = deliveries(sub["id"])
    repo = DeliveryRepository(notify_db())
    now = datetime.now(timezone.utc)
    assert repo.claim([d], "slow-worker", now, now + timedelta(seconds=0.2)) == {d["_id"]}
    slow = dict(d, claim_seq=d["claim_seq"] + 1)  # what the slow worker holds
    time.sleep(0.3)
    [expired] = deliveries(sub["id"])
    later = datetime.now(timezone.utc)
    assert repo.claim([expired], "taker", later, later + timedelta(seconds=30)) == {d["_id"]}
    engine = DeliveryEngine(settings("notify"), notify_db())
    try:
        assert engine.deliver(slow, _sub_doc(sub["id"])) == "success"  # made, but too late to count
    finally:
        engine.close()
    [now_doc] = deliveries(sub["id"])
    assert now_doc["status"] == "pending" and now_doc["lease_owner"] == "taker" and now_doc["claim_seq"] == 2
    assert now_doc["attempt_count"] == 0 and "expires_at" not in now_doc


def test_a_claim_on_a_stale_read_or_a_live_lease_wins_nothing(notify_client, fast):
    from services.notify.repository import DeliveryRepository
    sub = subscribe(notify_client, "http://127.0.0.1:9/hook", ["agreement.*"])
    consume(*[_sample(f"a_{i}") for i in range(4)])
    repo = DeliveryRepository(notify_db())
    read = deliveries(sub["id"])
    now = datetime.now(timezone.utc)
    assert repo.claim(read[:2], "w1", now, now + timedelta(seconds=30)) == {read[0]["_id"], read[1]["_id"]}
    # w2 read all four before w1's claim: it gets only the two w1 did not take
    assert repo.claim(read, "w2", now, now + timedelta(seconds=30)) == {read[2]["_id"], read[3]["_id"]}
    # nothing is free now, whoever asks and whatever they read
    assert repo.claim(deliveries(sub["id"]), "w3", now, now + timedelta(seconds=30)) == set()
    # 48 claimers racing for one fresh delivery: exactly one wins
    consume(_sample("a_race"))
    [fresh] = deliveries(sub["id"], subject="a_race")
    now = datetime.now(timezone.utc)
    won, start = [], threading.Barrier(48)

    def claimer(i):
        start.wait()
        won.append(repo.claim([fresh], f"r{i}", now, now + timedelta(seconds=30)))
    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(w) for w in won) == 1


# -- secrets ----------------------------------------------------------------------------------
def test_secret_rotation_signs_with_both_secrets_during_the_grace_period(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    old = sub["secret"]
    path = f"/v1/regions/{REGION}/subscriptions/{sub['id']}/rotate-secret"
    r = notify_client.post(path, json={}, headers=integrator())
    assert r.status_code == 200, r.json
    new = r.json["secret"]
    assert new.startswith("whsec_") and new != old and r.json["signing_secrets"] == 2
    notify_worker("deliveries")
    consume(_sample("a_1"))
    wait_until(lambda: receiver.count() == 1, message="delivery during the grace period")
    req = receiver.requests[0]
    assert len(req["headers"]["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(req["body"], req["headers"])
    Webhook(new).verify(req["body"], req["headers"])

    newest = notify_client.post(path, json={"grace_period_s": 0}, headers=integrator()).json
    assert newest["signing_secrets"] == 1
    consume(_sample("a_2"))
    wait_until(lambda: receiver.count() == 2, message="delivery after an immediate rotation")
    req = receiver.requests[1]
    Webhook(newest["secret"]).verify(req["body"], req["headers"])
    for retired in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(retired).verify(req["body"], req["headers"])


def test_ping_sends_a_signed_test_event(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries")
    r = notify_client.post(f"/v1/regions/{REGION}/subscriptions/{sub['id']}/ping", headers=integrator())
    assert r.status_code == 202, r.json
    wait_until(lambda: receiver.count() == 1, message="the ping")
    body = Webhook(sub["secret"]).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert body["type"] == "hecht.subscription.ping.v1" and body["id"] == r.json["event_id"]
    ev.validate(body)
    got = wait_until(lambda: notify_client.get(r.headers["Location"], headers=integrator()).json
                     if deliveries(sub["id"], status="succeeded") else None, message="ping recorded")
    assert got["status"] == "succeeded" and got["attempts"][0]["status"] == 200


# -- outbound address rules -------------------------------------------------------------------
def test_private_and_plain_http_urls_are_refused_when_not_allowed(notify_client, monkeypatch):
    monkeypatch.delenv("HECHT_WEBHOOKS_ALLOW_PRIVATE")
    from services.notify.app import create_app
    client = create_app().test_client()
    base = f"/v1/regions/{REGION}/subscriptions"
    for url in ("https://localhost:8443/hook", "https://127.0.0.1/hook", "https://169.254.169.254/latest",
                "https://[::1]/hook", "https://10.0.0.8/hook", "http://hooks.example.com/hook"):
        r = client.post(base, json={"url": url, "event_types": ["*"]}, headers=integrator())
        assert r.status_code == 422 and "url" in r.json["errors"], (url, r.json)
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"rebind.example.test": "127.0.0.1"}))
    r = client.post(base, json={"url": "https://rebind.example.test/hook", "event_types": ["*"]},
                    headers=integrator())
    assert r.status_code == 422 and "non-public" in str(r.json["errors"])


def test_the_resolved_address_is_checked_at_connect_time(notify_client, fast, receiver, monkeypatch):
    """DNS rebinding: public when subscribed, loopback when delivered → refused, nothing sent."""
    monkeypatch.delenv("HECHT_WEBHOOKS_ALLOW_PRIVATE")
    answers = {"hooks.example.test": "93.184.216.34"}
    monkeypatch.setattr(socket, "getaddrinfo", _resolver(answers))
    from services.notify.app import create_app
    client = create_app().test_client()
    sub = subscribe(client, f"https://hooks.example.test:{receiver.port}/hook", ["agreement.*"])
    answers["hooks.example.test"] = "127.0.0.1"  # the rebinding
    consume(_sample())
    engine = DeliveryEngine(settings("notify"), notify_db())
    try:
        assert engine.dispatch_once() == 1
        d = wait_until(lambda: engine.flush() and deliveries(sub["id"], status="pending", attempt_count=1),
                       message="attempt logged")[0]
    finally:
        engine.close()
    assert "refused" in d["attempts"][0]["error"] and "127.0.0.1" in d["attempts"][0]["error"]
    assert receiver.count() == 0


def test_the_outbound_session_refuses_loopback_names_and_plain_http(receiver):
    blocked = outbound.session(allow_private=False)
    for url in (f"https://localhost:{receiver.port}/hook", f"https://127.0.0.1:{receiver.port}/hook",
                f"http://127.0.0.1:{receiver.port}/hook"):
        with pytest.raises(outbound.BlockedDestination):
            blocked.post(url, data=b"{}", timeout=2)
    allowed = outbound.session(allow_private=True)
    assert allowed.post(receiver.url(), data=b"{}", timeout=2).status_code == 200
    assert receiver.count() == 1  # only the allowed request arrived


def _resolver(answers: dict[str, str]):
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 443))]
        return real(host, port, *args, **kwargs)
    return fake


# -- through Kafka ----------------------------------------------------------------------------
def test_events_from_kafka_fan_out_once_even_when_redelivered(notify_client, notify_worker, receiver):
    sub = subscribe(notify_client, receiver.url(), ["agreement.*", "member.enrolled", "subscription.*"])
    sample = _sample()
    enrolled = member_event("member.enrolled", "m_1", 1)
    produce(AGREEMENTS, sample, sample)
    produce(MEMBERS, enrolled)
    notify_worker("consumer", "deliveries")
    wait_until(lambda: receiver.count() == 2, timeout=30, message="deliveries from Kafka")
    consume(sample)  # a redelivery that got past the inbox (crash before the inbox write)
    time.sleep(0.5)
    assert sorted(b["id"] for b in receiver.bodies()) == sorted([sample["id"], enrolled["id"]])
    assert len(deliveries(sub["id"])) == 2
    assert "personal" not in next(b for b in receiver.bodies() if b["id"] == enrolled["id"])["data"]


def _near(value, expected, slack_s: float = 30) -> bool:
    return value is not None and abs((value - expected).total_seconds()) <= slack_s


def test_retention_settled_deliveries_expire_and_pending_ones_keep_their_copy(notify_client, notify_worker,
                                                                              receiver, monkeypatch):
    """Retention is TTL indexes on ``expires_at``: what settles gets one, what is pending (and
    the event copy it needs) does not, until it settles or goes."""
    monkeypatch.setenv("HECHT_NOTIFY_RETENTION_DAYS", "2")
    keep = timedelta(days=2)
    db = notify_db()
    for name in ("deliveries", "attempts", "event_copies"):
        ttl = [ix for ix in db[name].index_information().values() if ix["key"] == [("expires_at", 1)]]
        assert [ix.get("expireAfterSeconds") for ix in ttl] == [0], name
    busy = subscribe(notify_client, receiver.url(), ["agreement.*", "member.enrolled"])
    waiting = subscribe(notify_client, receiver.url("/waiting"), ["agreement.*"])
    sample, enrolled = _sample(), member_event("member.enrolled", "m_1", 1)
    unmatched = member_event("member.capacity_changed", "m_1", 2)
    receiver.script = [500]  # the first attempt fails: a delivery settles with an earlier attempt
    consume(sample, enrolled, unmatched)
    r = notify_client.patch(f"/v1/regions/{REGION}/subscriptions/{waiting['id']}", json={"enabled": False},
                            headers=integrator())
    assert r.status_code == 200  # its delivery waits, pending, until re-enabled
    copies = {c["_id"]: c for c in db.event_copies.find()}
    assert "expires_at" not in copies[sample["id"]] and "expires_at" not in copies[enrolled["id"]]
    assert copies[unmatched["id"]]["expires_at"] == copies[unmatched["id"]]["time"] + keep  # nobody needs it
    notify_worker("deliveries")
    # Settling writes the delivery first, then its earlier attempts' expiry and then its copy's:
    # wait for the whole settlement, then check what it wrote.
    def all_settled():
        ds = deliveries(busy["id"], status="succeeded")
        return ds if len(ds) == 2 and all("expires_at" in a for d in ds for a in d["attempts"]) else None
    settled = wait_until(all_settled, timeout=15, message="both delivered and settled")
    released = wait_until(lambda: db.event_copies.find_one({"_id": enrolled["id"], "expires_at": {"$exists": True}}),
                          timeout=15, message="the delivered event's copy released")
    for d in settled:
        assert _near(d["expires_at"], d["delivered_at"] + keep, 1)
        assert d["attempts"] and all(_near(a.get("expires_at"), d["delivered_at"] + keep) for a in d["attempts"])
    assert sum(len(d["attempts"]) for d in settled) == 3
    [pending] = deliveries(waiting["id"])
    assert pending["status"] == "pending" and "expires_at" not in pending
    assert _near(released["expires_at"], datetime.now(timezone.utc) + keep)
    assert "expires_at" not in db.event_copies.find_one({"_id": sample["id"]})  # the waiting delivery needs it

    # a finished delivery queued again: it, its attempts and its copy no longer expire
    d = next(d for d in settled if d["event_id"] == enrolled["id"])
    base = f"/v1/regions/{REGION}/subscriptions/{busy['id']}/deliveries"
    receiver.script = [{"status": 200, "sleep": 1.0}]
    assert notify_client.post(f"{base}/{d['_id']}/retry", headers=integrator()).status_code == 202
    reopened = db.deliveries.find_one({"_id": d["_id"]})  # the receiver takes a second to answer
    assert reopened["status"] == "pending" and "expires_at" not in reopened
    assert not db.attempts.count_documents({"delivery_id": d["_id"], "expires_at": {"$exists": True}})
    assert "expires_at" not in db.event_copies.find_one({"_id": enrolled["id"]})
    wait_until(lambda: deliveries(busy["id"], status="succeeded", event_id=enrolled["id"],
                                  attempt_count=d["attempt_count"] + 1), timeout=15, message="the retry delivered")
    wait_until(lambda: db.event_copies.find_one({"_id": enrolled["id"], "expires_at": {"$exists": True}}),
               timeout=15, message="the copy released again once the retry settled")
    assert db.attempts.count_documents({"delivery_id": d["_id"], "expires_at": {"$exists": False}}) == 0

    # the waiting subscription goes: its deliveries with it, and the copy only they needed expires
    assert notify_client.delete(f"/v1/regions/{REGION}/subscriptions/{waiting['id']}",
                                headers=integrator()).status_code == 204
    assert _near(db.event_copies.find_one({"_id": sample["id"]}).get("expires_at"),
                 datetime.now(timezone.utc) + keep)


def test_the_delivery_continues_the_requests_trace(notify_client, notify_worker, receiver):
    """One trace id from the HTTP request that caused the event to the webhook request."""
    sub = subscribe(notify_client, receiver.url(), ["agreement.*"])
    notify_worker("deliveries")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = notify_client.post(f"/v1/regions/{REGION}/subscriptions/{sub['id']}/ping",
                           headers={**integrator(), "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert r.status_code == 202, r.json
    wait_until(lambda: receiver.count() == 1, message="the ping")
    sent = receiver.requests[0]["headers"]["traceparent"].split("-")
    assert sent[1] == trace and sent[2] != "00f067aa0ba902b7"   # same trace, a span of its own
