"""Operation logs over HTTP: filters, paging links, sort, queue positions, isolation."""

from __future__ import annotations

import urllib.parse

from csbs.domain.identity import Role
from csbs.queue import EnqueueRequest, TaskStatus
from csbs.queue.jobs import Refs
from tests.support.runtime import Env


def _enqueue(env: Env, project_id: str, n: int, **kw: object) -> list[str]:
    ids = []
    for _ in range(n):
        env.clock.advance(1)
        ids.append(env.services.tasks.enqueue_one(EnqueueRequest(project_id, "delete", **kw)).id)  # type: ignore[arg-type]
    return ids


def test_list_show_and_queue_position(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    pid = env.project_id("alpha")
    ids = _enqueue(
        env, pid, 7, refs=Refs(checkpoint_id="cp1", checkpoint_item_id="item1", resource_id="srv1")
    )
    headers = {"X-Auth-Token": token}
    r = env.client.get(f"/v1/{pid}/operation_logs", headers=headers)
    assert r.status_code == 200
    logs = r.json()["operation_logs"]
    assert [x["id"] for x in logs] == list(reversed(ids))  # newest first by default
    assert "operation_logs_links" not in r.json()
    first = logs[-1]
    assert first["status"] == "waiting"
    assert first["operation_type"] == "delete"
    assert first["checkpoint_id"] == "cp1" and first["checkpoint_item_id"] == "item1"
    assert first["extra_info"] == {"progress": 0, "queue_position": 1}
    assert logs[0]["extra_info"]["queue_position"] == 7
    assert first["error_info"] is None and first["started_at"] is None
    assert len(first["created_at"]) == len("2017-04-18T01:21:52.701973")

    one = env.client.get(f"/v1/{pid}/operation_logs/{ids[2]}", headers=headers)
    assert one.status_code == 200
    assert one.json()["operation_log"]["extra_info"]["queue_position"] == 3


def test_paging_links_only_when_more(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    pid = env.project_id("alpha")
    ids = _enqueue(env, pid, 5)
    headers = {"X-Auth-Token": token}
    seen: list[str] = []
    url = f"/v1/{pid}/operation_logs?limit=2&sort=created_at:asc"
    pages = 0
    while url:
        r = env.client.get(url, headers=headers)
        assert r.status_code == 200
        body = r.json()
        seen += [x["id"] for x in body["operation_logs"]]
        links = body.get("operation_logs_links")
        pages += 1
        if links:
            assert links[0]["rel"] == "next"
            parsed = urllib.parse.urlsplit(links[0]["href"])
            assert dict(urllib.parse.parse_qsl(parsed.query))["marker"] == seen[-1]
            url = f"{parsed.path}?{parsed.query}"
        else:
            url = ""
    assert seen == ids and pages == 3
    r = env.client.get(
        f"/v1/{pid}/operation_logs?limit=2&offset=4&sort=created_at:asc", headers=headers
    )
    assert [x["id"] for x in r.json()["operation_logs"]] == ids[4:]


def test_filters(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    pid = env.project_id("alpha")
    a = _enqueue(env, pid, 2, refs=Refs(checkpoint_id="cpA"))
    b = _enqueue(env, pid, 1, refs=Refs(checkpoint_id="cpB", resource_id="srv9"))
    running = env.services.tasks.claim("w", None, ["delete"])
    assert running is not None and running.id == a[0]
    headers = {"X-Auth-Token": token}

    def ids(query: str) -> set[str]:
        r = env.client.get(f"/v1/{pid}/operation_logs?{query}", headers=headers)
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["operation_logs"]}

    assert ids("checkpoint_id=cpA") == set(a)
    assert ids("resource_id=srv9") == set(b)
    assert ids("status=running") == {a[0]}
    assert ids("status=waiting&checkpoint_id=cpA") == {a[1]}
    assert ids("operation_type=backup") == set()
    created_b = env.services.tasks.get(b[0]).created_at.strftime("%Y-%m-%dT%H:%M:%S.%f")  # type: ignore[union-attr]
    assert ids(f"start_time={created_b}") == set(b)
    assert env.services.tasks.finish(running, "w", TaskStatus.SUCCESS)
    assert ids("status=success") == {a[0]}


def test_bad_queries_are_400(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    pid = env.project_id("alpha")
    headers = {"X-Auth-Token": token}
    for query in (
        "status=done",
        "operation_type=x",
        "sort=nope",
        "sort=created_at:sideways",
        "limit=0",
        "limit=abc",
        "offset=-1",
        "start_time=yesterday",
        "marker=unknown-task",
        "sort=" + "created_at," * 40,
    ):
        r = env.client.get(f"/v1/{pid}/operation_logs?{query}", headers=headers)
        assert r.status_code == 400, (query, r.text)
        assert r.json()["error_code"] == "CSBS.9001"


def test_isolation_and_not_found(env: Env) -> None:
    alpha_token = env.add_user("mia", "alpha", Role.MEMBER)
    beta_token = env.add_user("bo", "beta", Role.READER)
    alpha, beta = env.project_id("alpha"), env.project_id("beta")
    (task_id,) = _enqueue(env, alpha, 1)
    # Another project's token: 403 on the other project's path.
    assert (
        env.client.get(
            f"/v1/{alpha}/operation_logs", headers={"X-Auth-Token": beta_token}
        ).status_code
        == 403
    )
    # Own path, someone else's task id: 404 exactly like an unknown id.
    r = env.client.get(f"/v1/{beta}/operation_logs/{task_id}", headers={"X-Auth-Token": beta_token})
    unknown = env.client.get(
        f"/v1/{beta}/operation_logs/nope", headers={"X-Auth-Token": beta_token}
    )
    assert r.status_code == unknown.status_code == 404
    assert r.json()["error_code"] == unknown.json()["error_code"] == "CSBS.6040"
    assert env.client.get(
        f"/v1/{beta}/operation_logs", headers={"X-Auth-Token": beta_token}
    ).json() == {"operation_logs": []}
    # all_tenants: admin only.
    assert (
        env.client.get(
            f"/v1/{alpha}/operation_logs?all_tenants=true", headers={"X-Auth-Token": alpha_token}
        ).status_code
        == 403
    )
    admin = env.admin_token()
    r = env.client.get(
        f"/v1/{env.project_id('admin')}/operation_logs?all_tenants=true",
        headers={"X-Auth-Token": admin},
    )
    assert [x["id"] for x in r.json()["operation_logs"]] == [task_id]


def test_an_admin_shows_any_projects_task_with_all_tenants(env: Env) -> None:
    """How `csbs task wait TASK` finds a task it is given by id alone."""
    member = env.add_user("mia", "alpha", Role.MEMBER)
    alpha = env.project_id("alpha")
    (task_id,) = _enqueue(env, alpha, 1)
    admin, admin_project = env.admin_token(), env.project_id("admin")
    path = f"/v1/{admin_project}/operation_logs/{task_id}"
    assert env.client.get(path, headers={"X-Auth-Token": admin}).status_code == 404
    shown = env.client.get(path, params={"all_tenants": "true"}, headers={"X-Auth-Token": admin})
    assert shown.status_code == 200, shown.text
    assert shown.json()["operation_log"]["project_id"] == alpha
    r = env.client.get(
        f"/v1/{alpha}/operation_logs/{task_id}",
        params={"all_tenants": "true"},
        headers={"X-Auth-Token": member},
    )
    assert r.status_code == 403
