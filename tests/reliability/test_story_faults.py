"""The e2e story under faults (issue 6): kill -9 every worker mid-story, and a receiver
that answers 500 for a while. Afterwards nothing is missing and no effect is doubled
(run_story asserts every event delivered, in order, each e-mail exactly once), and the
consumer groups catch up (lag 0)."""
from __future__ import annotations

import time

from hecht import topics
from hecht.config import settings
from hecht.consumer import lag
from tests.conftest import wait_until
from tests.e2e.conftest import running  # noqa: F401 - the fixture
from tests.e2e.test_story import run_story


def _lag_is_zero() -> bool:
    return (lag(settings("agreements"), "agreements", [topics.MEMBERS]) == 0 and
            lag(settings("notify"), "notify", list(topics.EVENT_TOPICS)) == 0)


def test_story_survives_kill_9_of_every_worker(running, topic_reader, hecht_env):
    killed = []

    def fault(stage, receiver):
        for name in ("members-worker", "agreements-worker", "notify-worker"):
            running.restart(name)  # SIGKILL, then start again
            killed.append((stage, name))

    summary = run_story(running, topic_reader, hecht_env, fault)
    wait_until(_lag_is_zero, timeout=60, message="consumer lag back to 0")
    assert len(killed) == 6
    print(f"kill -9 run: {summary}, missing 0")


def test_story_survives_a_receiver_failing_for_a_while(running, topic_reader, hecht_env):
    def fault(stage, receiver):
        if stage == "signing-up":
            receiver.fail_with = 500
        if stage == "voting":
            time.sleep(1)
            receiver.fail_with = None

    summary = run_story(running, topic_reader, hecht_env, fault)
    assert summary["failed_answers"] > 0, "the receiver's 500s were never exercised"
    wait_until(_lag_is_zero, timeout=60, message="consumer lag back to 0")
    print(f"receiver-500 run: {summary}, missing 0")
