"""The e2e story under faults (issue 6), each in its own run under a steady load of sign-ups:
kill -9 of the Kafka broker, of the database server, of every worker, and a receiver answering 500
for a while. Afterwards (run_story asserts it): every acknowledged write is stored, every
event of the region is on Kafka and reached the receiver (none missing by webhook-id), in
order, each e-mail exactly once; and here, the consumer groups catch up (lag 0).
Each run prints its summary line."""
from __future__ import annotations

import time

import requests

from hecht import topics
from hecht.config import settings
from hecht.consumer import lag
from tests.conftest import wait_until
from tests.e2e.conftest import running  # noqa: F401 - the fixture
from tests.e2e.test_story import run_story
from tests.reliability.test_outages import stack

OUTAGE_S = 5  # how long a server stays dead while the load keeps coming


def _lag_is_zero() -> bool:
    return (lag(settings("agreements"), "agreements", [topics.MEMBERS]) == 0 and
            lag(settings("notify"), "notify", list(topics.EVENT_TOPICS)) == 0)


def _finish(name: str, summary: dict) -> None:
    wait_until(_lag_is_zero, timeout=90, message="consumer lag back to 0")
    assert summary["missing"] == 0
    print(f"\n{name}: {summary}")


def test_story_survives_kill_9_of_kafka_under_load(running, topic_reader, hecht_env):
    during = {}

    def fault(stage, receiver, steady):
        if stage == "voting":
            before = len(steady.acknowledged)
            stack("kill9", "kafka")
            time.sleep(OUTAGE_S)
            during["acknowledged"] = len(steady.acknowledged) - before
            stack("restart", "kafka")

    summary = run_story(running, topic_reader, hecht_env, fault, load=True)
    # the API kept taking writes with the broker dead (the outbox holds their events)
    assert during["acknowledged"] > 0, during
    _finish("kafka kill -9 run", dict(summary, acknowledged_while_kafka_was_dead=during["acknowledged"]))


def test_story_survives_kill_9_of_the_database_under_load(running, topic_reader, hecht_env):
    members = running.urls["members"]

    def fault(stage, receiver, steady):
        if stage == "signing-up":
            stack("kill9", "mongo")
            time.sleep(OUTAGE_S)
            stack("restart", "mongo")
            wait_until(lambda: requests.get(f"{members}/readyz", timeout=5).status_code == 200, timeout=60,
                       message="members to be ready again")

    summary = run_story(running, topic_reader, hecht_env, fault, load=True)
    # requests during the outage got 503 problems (SteadyLoad fails the run on a 500 or a hang)
    assert summary["load"].get(503, 0) > 0, summary["load"]
    _finish("database kill -9 run", summary)


def test_story_survives_kill_9_of_every_worker_under_load(running, topic_reader, hecht_env):
    killed = []

    def fault(stage, receiver, steady):
        for name in ("members-worker", "agreements-worker", "notify-worker"):
            running.restart(name)  # SIGKILL, then start again
            killed.append((stage, name))

    summary = run_story(running, topic_reader, hecht_env, fault, load=True)
    assert len(killed) == 6
    _finish("workers kill -9 run", summary)


def test_story_survives_a_receiver_failing_for_a_while_under_load(running, topic_reader, hecht_env):
    def fault(stage, receiver, steady):
        if stage == "signing-up":  # shorter than the retry schedule (e2e conftest: 15.7 s in all)
            receiver.fail_with = 500
            time.sleep(OUTAGE_S)
            receiver.fail_with = None

    summary = run_story(running, topic_reader, hecht_env, fault, load=True)
    assert summary["failed_answers"] > 0, "the receiver's 500s were never exercised"
    _finish("receiver-500 run", summary)
