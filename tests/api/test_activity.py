"""The API counts its calls in flight for the embedded worker (`ApiActivity`)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from csbs.api.app import create_app
from csbs.app.activity import QUIET_SECONDS
from tests.support.runtime import Env


def test_calls_in_flight_are_counted_and_probes_are_not(env: Env) -> None:
    app = create_app(env.services, env.runtime.edge)
    activity = env.runtime.activity
    seen: list[bool] = []

    def during() -> dict[str, bool]:
        seen.append(activity.busy())
        return {}

    app.add_api_route("/probe/during", during)
    with TestClient(app) as client:
        time.sleep(QUIET_SECONDS * 2)
        assert not activity.busy()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert not activity.busy(), "a health probe held back the worker"
        assert client.get("/probe/during").status_code == 200
        assert seen == [True], "a call in flight was not counted"
        assert client.get("/v1/nowhere").status_code == 404
        assert activity.busy(), "a call that just ended should count for a moment"
        time.sleep(QUIET_SECONDS * 2)
        assert not activity.busy(), "a call was counted in but never out"
