"""The API's activity gauge, as the embedded worker process reads it."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from csbs.app.activity import QUIET_SECONDS, ApiActivity


def test_busy_while_calls_are_in_flight_and_shortly_after() -> None:
    activity = ApiActivity()
    assert not activity.busy()
    activity.call_started()
    activity.call_started()
    activity.call_ended()
    assert activity.busy(), "one call is still in flight"
    activity.call_ended()
    assert activity.busy(), "the last call ended just now"
    time.sleep(QUIET_SECONDS * 2)
    assert not activity.busy()


def _child_reads(shared: Any, answers: Any) -> None:
    answers.put(ApiActivity(shared).busy())


def test_a_spawned_process_sees_the_parents_calls() -> None:
    activity = ApiActivity()
    ctx = multiprocessing.get_context("spawn")
    answers = ctx.Queue()
    activity.call_started()
    child = ctx.Process(target=_child_reads, args=(activity.shared, answers))
    child.start()
    assert answers.get(timeout=30) is True
    child.join(30)
    activity.call_ended()
    time.sleep(QUIET_SECONDS * 2)
    child = ctx.Process(target=_child_reads, args=(activity.shared, answers))
    child.start()
    assert answers.get(timeout=30) is False
    child.join(30)
