"""Quotas with real backups and deletions: usage is exact, enforcement is at creation."""

from __future__ import annotations

import os
from typing import Any

from tests.tasks.conftest import Cloud
from tests.tasks.test_delete import _delete, _gone


def _quotas(cloud: Cloud) -> dict[str, Any]:
    r = cloud.env.client.get(f"/v1/{cloud.pid}/quotas", headers=cloud.headers())
    assert r.status_code == 200, r.text
    return {x["type"]: x for x in r.json()["quotas"]["resources"]}


def _expected_gb(cloud: Cloud) -> float:
    return round(cloud.env.services.repository.usage(cloud.pid).stored_bytes / 2**30, 6)


def _server(cloud: Cloud, name: str, data: bytes) -> str:
    disk = cloud.blank(name, 4)
    with open(disk, "r+b") as f:
        f.write(data)
    return str(cloud.server(name, [disk])["id"])


def test_usage_is_exact_and_capacity_is_enforced_after_the_fact(cloud: Cloud) -> None:
    data = os.urandom(3 << 20)  # incompressible: the stored size is about 3 MiB
    first = _server(cloud, "q1", data)
    second = _server(cloud, "q2", data[: 1 << 20] + os.urandom(1 << 20))
    r = cloud.protect(first)
    a = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert a["status"] == "available"
    q = _quotas(cloud)
    assert q["backups"]["used"] == 1
    stored_one = cloud.env.services.repository.usage(cloud.pid).stored_bytes
    assert 3 << 20 <= stored_one < 4 << 20
    assert q["backup_capacity"]["used"] == _expected_gb(cloud) > 0

    # The quota is reached while the second backup is being made: it still finishes...
    r = cloud.protect(second)
    assert r.status_code == 200, r.text
    second_id = cloud.item_of(r.json()["checkpoint"]["id"])["id"]
    admin = {"X-Auth-Token": cloud.admin}
    r = cloud.env.client.put(
        f"/v1/{cloud.pid}/admin/quotas", headers=admin, json={"quotas": {"backup_capacity": 0}}
    )
    assert r.status_code == 200, r.text
    b = cloud.wait_backup(second_id)
    assert b["status"] == "available"
    q = _quotas(cloud)
    assert q["backups"]["used"] == 2
    # ... deduplicated against the first: only the new MiB is stored again
    stored_two = cloud.env.services.repository.usage(cloud.pid).stored_bytes
    assert stored_one + (1 << 20) <= stored_two < stored_one + (2 << 20)
    assert q["backup_capacity"]["used"] == _expected_gb(cloud)

    # ... and the next one is refused, naming the resource; nothing is created.
    r = cloud.protect(first)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9006"
    assert r.json()["error_msg"] == "Quota exceeded for resources: backup_capacity"
    assert _quotas(cloud)["backups"]["used"] == 2

    # Deletions lower both as soon as they end.
    assert _delete(cloud, a["checkpoint_id"]).status_code == 200
    _gone(cloud, a["id"])
    q = _quotas(cloud)
    assert q["backups"]["used"] == 1
    assert q["backup_capacity"]["used"] == _expected_gb(cloud)
    assert cloud.env.services.repository.usage(cloud.pid).stored_bytes < stored_two
    assert _delete(cloud, b["checkpoint_id"]).status_code == 200
    _gone(cloud, b["id"])
    q = _quotas(cloud)
    assert q["backups"]["used"] == 0
    assert q["backup_capacity"]["used"] == 0.0
    assert cloud.env.services.repository.usage(cloud.pid).stored_bytes == 0

    # A quota of 0 GB allows nothing, even when empty; under a 1 GB quota backups go again.
    r = cloud.protect(first)
    assert r.json()["error_msg"] == "Quota exceeded for resources: backup_capacity"
    r = cloud.env.client.put(
        f"/v1/{cloud.pid}/admin/quotas", headers=admin, json={"quotas": {"backup_capacity": 1}}
    )
    assert r.status_code == 200
    r = cloud.protect(first)
    assert r.status_code == 200, r.text
    assert cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])["status"] == (
        "available"
    )
