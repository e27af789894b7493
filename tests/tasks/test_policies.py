"""A policy end to end: two servers with real ext4 images, three runs, retention of two."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.tasks.conftest import PROVIDER, Cloud

pytestmark = pytest.mark.slow


def _wait_items(cloud: Cloud, checkpoint_id: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 120
    while True:
        items = cloud.env.client.get(
            f"/v1/{cloud.pid}/checkpoint_items?checkpoint_id={checkpoint_id}",
            headers=cloud.headers(),
        ).json()["checkpoint_items"]
        if len(items) == n and all(i["status"] in ("available", "error") for i in items):
            return list(items)
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def test_policy_runs_and_retention_deletes_the_oldest(cloud: Cloud) -> None:
    images = {
        name: cloud.ext4_image(name, 8, {"etc/hostname": name.encode(), "data/run": b"0"})
        for name in ("web", "db")
    }
    servers = {name: cloud.server(name, [path]) for name, path in images.items()}
    # A manual backup of one of the servers: a policy never prunes it.
    manual = cloud.protect(servers["web"]["id"]).json()["checkpoint"]
    manual_item = cloud.wait_backup(cloud.item_of(manual["id"])["id"])
    assert manual_item["status"] == "available"
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/policies",
        headers=cloud.headers(),
        json={
            "policy": {
                "name": "keep-two",
                "provider_id": PROVIDER,
                "parameters": {"common": {}},
                "resources": [
                    {"id": s["id"], "type": "OS::Nova::Server", "name": s["name"]}
                    for s in servers.values()
                ],
                "scheduled_operations": [
                    {
                        "enabled": True,
                        "operation_type": "backup",
                        "operation_definition": {"max_backups": 2},
                        "trigger": {
                            "properties": {
                                "pattern": "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n"
                                "RRULE:FREQ=DAILY;BYHOUR=3;BYMINUTE=0\r\n"
                                "END:VEVENT\r\nEND:VCALENDAR\r\n"
                            }
                        },
                    }
                ],
            }
        },
    )
    assert r.status_code == 200, r.text
    policy_id = r.json()["policy"]["id"]
    runs = []
    for n in range(3):
        cloud.env.clock.advance(3600)  # backups of each run are an hour apart
        for name, path in images.items():
            cloud.ext4_image(name, 8, {"etc/hostname": name.encode(), "data/run": str(n).encode()})
            assert path.exists()
        r = cloud.env.client.post(
            f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints",
            headers=cloud.headers(),
            json={"checkpoint": {"plan_id": policy_id, "parameters": {"auto_trigger": True}}},
        )
        assert r.status_code == 200, r.text
        cp = r.json()["checkpoint"]
        items = _wait_items(cloud, cp["id"], 2)
        assert all(i["status"] == "available" for i in items), items
        assert all(i["name"].startswith("autobk_") for i in items)
        runs.append(cp["id"])
    # The third run's end applied retention: the first run's two backups go through deletion
    # tasks (the same tasks, and admission limit, as DELETE).
    deadline = time.monotonic() + 120
    while True:
        first = cloud.env.client.get(
            f"/v1/{cloud.pid}/checkpoint_items?checkpoint_id={runs[0]}", headers=cloud.headers()
        ).json()["checkpoint_items"]
        if not first:
            break
        assert all(i["status"] in ("waiting_delete", "deleting", "available") for i in first)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    logs = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs?operation_type=delete&plan_id={policy_id}",
        headers=cloud.headers(),
    ).json()["operation_logs"]
    assert len(logs) == 2 and all(x["status"] == "success" for x in logs)
    assert {x["checkpoint_id"] for x in logs} == {runs[0]}
    for cp_id in runs[1:]:
        assert len(_wait_items(cloud, cp_id, 2)) == 2
    # The manual backup is untouched; the record of the first run is gone.
    shown = cloud.env.client.get(
        f"/v1/{cloud.pid}/checkpoint_items/{manual_item['id']}", headers=cloud.headers()
    )
    assert shown.status_code == 200 and shown.json()["checkpoint_item"]["status"] == "available"
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{runs[0]}", headers=cloud.headers()
    )
    assert r.status_code == 404
    repo = cloud.env.services.repository
    assert repo.check(cloud.pid, read_data=True).ok
