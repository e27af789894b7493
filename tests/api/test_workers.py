"""GET /v3/workers: the deployment's workers, for administrators only."""

from __future__ import annotations

from csbs.domain.identity import Role
from csbs.queue.registry import Registration
from tests.support.runtime import Env


def test_workers_are_listed_for_admins_only(env: Env) -> None:
    registry = env.services.tasks.workers
    registry.register(Registration("h1:1:aa", "h1", "0.1.0", 1, 4))
    registry.register(Registration("h2:2:bb", "h2", "0.1.0", 2, 8))
    env.clock.advance(env.services.workers.stale_seconds + 1)
    registry.beat(Registration("h1:1:aa", "h1", "0.1.0", 1, 4), running=3)

    admin = {"X-Auth-Token": env.admin_token()}
    r = env.client.get("/v3/workers", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["live_hosts"] == ["h1"]
    by_host = {w["host"]: w for w in body["workers"]}
    assert by_host["h1"]["alive"] is True and by_host["h1"]["running"] == 3
    assert by_host["h1"]["slots"] == 4 and by_host["h1"]["version"] == "0.1.0"
    assert by_host["h2"]["alive"] is False and by_host["h2"]["slots"] == 8
    assert body["stale_seconds"] == env.services.workers.stale_seconds

    tenant = env.add_user("alice", "proj", Role.MEMBER)
    r = env.client.get("/v3/workers", headers={"X-Auth-Token": tenant})
    assert r.status_code == 403 and r.json()["error_code"] == "CSBS.9011"
    assert "h1" not in r.text
    assert env.client.get("/v3/workers").status_code == 401
