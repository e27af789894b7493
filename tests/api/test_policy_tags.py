"""Tags of policies over HTTP (T7-T12): the same rules as backups' through the same code,
with the policy's own not-found error and an empty `resource_detail`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csbs.domain.identity import Role
from tests.support.runtime import Env, make_env
from tests.support.seed import EPOCH, seed_backup, seed_policy


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[Env]:
    e = make_env(tmp_path, db_url)
    try:
        yield e
    finally:
        e.client.close()
        e.runtime.close()


def _h(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def test_policy_tags_end_to_end(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    reader = env.add_user("rey", "alpha", Role.READER)
    other = env.add_user("bob", "beta", Role.MEMBER)
    pid, beta = env.project_id("alpha"), env.project_id("beta")
    c = env.client
    base = f"/v1/{pid}/csbs_backup_policy"
    p1 = seed_policy(env.services, pid, "nightly", tags=[("env", "prod")])
    p2 = seed_policy(env.services, pid, "weekly", created_at=EPOCH + dt.timedelta(hours=1))
    foreign = seed_policy(env.services, beta, "theirs", tags=[("env", "beta")])
    # a backup with the same id space must not be reachable through the policy paths
    backup = seed_backup(env.services, pid, "bk", tags=[("env", "backup")])

    def tags(policy_id: str) -> Any:
        r = c.get(f"{base}/{policy_id}/tags", headers=_h(reader))
        assert r.status_code == 200, r.text
        return r.json()["tags"]

    # T9 add one, T8 batch, T12 project tags, T11 list
    r = c.post(f"{base}/{p2}/tags", headers=_h(token), json={"tag": {"key": "env", "value": "dev"}})
    assert r.status_code == 204 and r.content == b""
    r = c.post(
        f"{base}/{p1}/tags/action",
        headers=_h(token),
        json={
            "action": "create",
            "tags": [{"key": "team", "value": "a"}, {"key": "env", "value": "prd"}],
        },
    )
    assert r.status_code == 204
    assert tags(p1) == [{"key": "env", "value": "prd"}, {"key": "team", "value": "a"}]
    assert c.get(f"{base}/tags", headers=_h(reader)).json() == {
        "tags": [{"key": "env", "values": ["dev", "prd"]}, {"key": "team", "values": ["a"]}]
    }
    # the backups' store is separate
    assert c.get(f"/v1/{pid}/csbs_backup/tags", headers=_h(reader)).json() == {
        "tags": [{"key": "env", "values": ["backup"]}]
    }

    # T7 query: resource_name is the policy name, resource_detail is {}
    r = c.post(
        f"{base}/resource_instances/action",
        headers=_h(reader),
        json={"action": "filter", "tags": [{"key": "env", "values": []}]},
    )
    assert r.status_code == 200
    assert r.json() == {
        "resources": [
            {
                "resource_id": p2,
                "resource_name": "weekly",
                "resource_detail": {},
                "tags": [{"key": "env", "value": "dev"}],
            },
            {
                "resource_id": p1,
                "resource_name": "nightly",
                "resource_detail": {},
                "tags": [{"key": "env", "value": "prd"}, {"key": "team", "value": "a"}],
            },
        ],
        "total_count": 2,
    }
    r = c.post(
        f"{base}/resource_instances/action",
        headers=_h(reader),
        json={
            "action": "count",
            "not_tags_any": [{"key": "team", "values": []}],
            "matches": [{"key": "resource_name", "value": "WEEK"}],
        },
    )
    assert r.json() == {"total_count": 1}

    # limits and rules are the same as for backups
    r = c.post(
        f"{base}/{p1}/tags/action",
        headers=_h(token),
        json={"action": "create", "tags": [{"key": f"k{i}", "value": "v"} for i in range(9)]},
    )
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.7000"
    r = c.post(f"{base}/{p1}/tags", headers=_h(token), json={"tag": {"key": "a.b", "value": ""}})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    assert (
        c.post(
            f"{base}/{p1}/tags", headers=_h(reader), json={"tag": {"key": "a", "value": ""}}
        ).status_code
        == 403
    )

    # T10 delete one; missing -> 404 CSBS.7001
    assert c.delete(f"{base}/{p1}/tags/team", headers=_h(token)).status_code == 204
    r = c.delete(f"{base}/{p1}/tags/team", headers=_h(token))
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.7001"
    assert tags(p1) == [{"key": "env", "value": "prd"}]

    # unknown policy, another project's policy, or a backup id -> 404 CSBS.3000
    for rid in ("nope", foreign, backup.id):
        for r in (
            c.get(f"{base}/{rid}/tags", headers=_h(token)),
            c.post(
                f"{base}/{rid}/tags", headers=_h(token), json={"tag": {"key": "k", "value": "v"}}
            ),
            c.post(
                f"{base}/{rid}/tags/action",
                headers=_h(token),
                json={"action": "delete", "tags": [{"key": "env"}]},
            ),
            c.delete(f"{base}/{rid}/tags/env", headers=_h(token)),
        ):
            assert r.status_code == 404, r.text
            assert r.json()["error_code"] == "CSBS.3000"
    r = c.get(f"/v1/{beta}/csbs_backup_policy/{foreign}/tags", headers=_h(other))
    assert r.json() == {"tags": [{"key": "env", "value": "beta"}]}
    # and a policy id through the backup paths is not a backup
    r = c.get(f"/v1/{pid}/csbs_backup/{p1}/tags", headers=_h(token))
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"
