"""The fast DELETE of backups (`csbs.api.fast_delete`) answers as the FastAPI route does."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from csbs.api.app import create_app
from csbs.api.fast_delete import FastDelete
from csbs.domain.identity import Role
from tests.tasks.conftest import PROVIDER, Cloud


def _backup(cloud: Cloud, name: str) -> dict[str, Any]:
    disk = cloud.blank(name, 1)
    with open(disk, "r+b") as f:
        f.write(name.encode() * 10_000)
    r = cloud.protect(cloud.server(name, [disk])["id"], backup_name=name)
    item = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert item["status"] == "available"
    return item


@pytest.fixture
def routed(cloud: Cloud) -> Iterator[TestClient]:
    """The same application without the fast path: every DELETE goes through FastAPI."""
    app = create_app(cloud.env.services, cloud.env.runtime.edge)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastDelete]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _answer(r: Any) -> tuple[int, Any, str | None, str | None]:
    return (
        r.status_code,
        r.json(),
        r.headers.get("content-type"),
        r.headers.get("www-authenticate"),
    )


def test_errors_and_acceptance_match_the_route(
    cloud: Cloud, routed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    a = _backup(cloud, "fda")
    b = _backup(cloud, "fdb")
    c = _backup(cloud, "fdc")
    reader = cloud.env.add_user("rey", "alpha", Role.READER)
    foreign = cloud.env.add_user("finn", "beta", Role.MEMBER)
    fast = cloud.env.client
    base = f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints"
    own = cloud.headers()
    refused: list[tuple[str, str, dict[str, str]]] = [
        ("no token", f"{base}/{a['checkpoint_id']}", {}),
        ("bad token", f"{base}/{a['checkpoint_id']}", {"X-Auth-Token": "nonsense"}),
        ("reader", f"{base}/{a['checkpoint_id']}", cloud.headers(reader)),
        ("other project", f"{base}/{a['checkpoint_id']}", cloud.headers(foreign)),
        (
            "other provider",
            f"/v1/{cloud.pid}/providers/other/checkpoints/{a['checkpoint_id']}",
            own,
        ),
        ("unknown record", f"{base}/no-such-record", own),
        ("id too long", f"{base}/{'x' * 65}", own),
        ("foreign item", f"{base}/{a['checkpoint_id']}?checkpoint_items={a['id']},{b['id']}", own),
        ("empty items", f"{base}/{a['checkpoint_id']}?checkpoint_items=", own),
        ("malformed items", f"{base}/{a['checkpoint_id']}?checkpoint_items=a,,b", own),
    ]
    cloud.worker.stop(grace=1)  # accepted deletions stay in the queue
    for label, url, headers in refused:
        got, want = fast.delete(url, headers=headers), routed.delete(url, headers=headers)
        assert got.status_code >= 400, label
        assert _answer(got) == _answer(want), label

    # Accepted: each path takes one backup; both answer {} with the task's id.
    caplog.set_level(logging.INFO, logger="csbs.api.request")
    for client, item in ((fast, a), (routed, b)):
        r = client.delete(f"{base}/{item['checkpoint_id']}", headers=own)
        assert (r.status_code, r.json()) == (200, {}), r.text
        task = cloud.env.services.tasks.get(r.headers["X-Operation-Log-Id"])
        assert task is not None and task.params == {"backup_id": item["id"]}
        shown = fast.get(f"/v1/{cloud.pid}/checkpoint_items/{item['id']}", headers=own).json()
        assert shown["checkpoint_item"]["status"] == "waiting_delete"
    routes = [r.route for r in caplog.records if getattr(r, "method", None) == "DELETE"]
    assert routes[-2:] == [routes[-1]] * 2 and "{checkpoint_id}" in routes[-1], routes

    # A backup already being deleted: the same 400 from both.
    for client in (fast, routed):
        r = client.delete(f"{base}/{a['checkpoint_id']}", headers=own)
        assert (r.status_code, r.json()["error_code"]) == (400, "CSBS.2003")
    # checkpoint_items repeated, on the fast path.
    r = fast.delete(
        f"{base}/{c['checkpoint_id']}?checkpoint_items={c['id']}&checkpoint_items={c['id']}",
        headers=own,
    )
    assert r.status_code == 200 and len(r.headers["X-Operation-Log-Id"].split(",")) == 1


def test_only_the_plain_delete_is_taken(cloud: Cloud) -> None:
    passed: list[str] = []

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        passed.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = TestClient(FastDelete(application, services=cloud.env.services))
    plain = f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/abc"
    assert client.delete(plain).status_code == 401  # answered here: no token
    assert client.delete(plain + "?checkpoint_items=x").status_code == 401
    assert passed == []
    for method, path in [
        ("GET", plain),
        ("POST", plain),
        ("DELETE", plain + "/"),
        ("DELETE", f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{'x' * 65}"),
        ("DELETE", f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints"),
        ("DELETE", f"/v1/{cloud.pid}/checkpoint_items/abc"),
    ]:
        assert client.request(method, path).status_code == 299, (method, path)
    assert len(passed) == 6
