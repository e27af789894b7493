"""Every refusal of backup and restore, with its CSBS code, and nothing half-created."""

from __future__ import annotations

from typing import Any

from csbs.domain.identity import Role
from tests.tasks.conftest import PROVIDER, Cloud


def _restore(
    cloud: Cloud, backup: dict[str, Any], server_id: str, volumes: list[dict[str, str]], **over: Any
) -> Any:
    body = {
        "restore": {
            "provider_id": over.get("provider_id", PROVIDER),
            "checkpoint_id": over.get("checkpoint_id", backup["checkpoint_id"]),
            "parameters": {
                "checkpoint_item_id": backup["id"],
                "power_on": False,
                "targets": {"server_id": server_id, "volumes": volumes},
            },
        }
    }
    return cloud.env.client.post(
        f"/v1/{cloud.pid}/restores", headers=over.get("headers", cloud.headers()), json=body
    )


def _code(r: Any) -> tuple[int, str]:
    return r.status_code, r.json().get("error_code", "")


def test_protect_refusals(cloud: Cloud) -> None:
    server = cloud.server("web1", [cloud.blank("a", 4)])
    empty_count = {"count": 0}
    count_url = f"/v1/{cloud.pid}/checkpoint_items/count"
    reader = cloud.env.add_user("rey", "alpha", Role.READER)
    foreign = cloud.env.add_user("finn", "beta", Role.MEMBER)
    assert _code(cloud.protect("no-such-server")) == (400, "CSBS.6000")
    assert _code(cloud.protect(server["id"], backup_name="bad name")) == (400, "CSBS.9001")
    assert _code(cloud.protect(server["id"], description="a<b")) == (400, "CSBS.9001")
    assert _code(cloud.protect(server["id"], resource_type="OS::Cinder::Volume")) == (
        400,
        "CSBS.6003",
    )
    many = [{"key": f"k{i}", "value": "v"} for i in range(11)]
    assert _code(cloud.protect(server["id"], tags=many)) == (400, "CSBS.7000")
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/providers/not-csbs/resources/{server['id']}/action",
        headers=cloud.headers(),
        json={"protect": {}},
    )
    assert _code(r) == (400, "CSBS.9001")
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/resources/{server['id']}/action",
        headers=cloud.headers(reader),
        json={"protect": {}},
    )
    assert r.status_code == 403
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/resources/{server['id']}/action",
        headers=cloud.headers(foreign),
        json={"protect": {}},
    )
    assert r.status_code == 403
    assert cloud.env.client.get(count_url, headers=cloud.headers()).json() == empty_count
    # Readers may read.
    assert cloud.env.client.get(count_url, headers=cloud.headers(reader)).status_code == 200


def test_restore_refusals(cloud: Cloud) -> None:
    source = cloud.server("src", [cloud.blank("s0", 8), cloud.blank("s1", 4)])
    with open(source["disks"][0]["path"], "r+b") as f:
        f.write(b"system disk")
    r = cloud.protect(source["id"])
    backup = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert backup["status"] == "available"
    vb = [v["id"] for v in backup["extend_info"]["volume_backups"]]
    ok_target = cloud.server("ok", [cloud.blank("o0", 8), cloud.blank("o1", 4)])
    small = cloud.server("small", [cloud.blank("m0", 2), cloud.blank("m1", 4)])
    running = cloud.server("run", [cloud.blank("r0", 8), cloud.blank("r1", 4)], status="running")
    td = [d["id"] for d in ok_target["disks"]]

    def both(server: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"backup_id": vb[0], "volume_id": server["disks"][0]["id"]},
            {"backup_id": vb[1], "volume_id": server["disks"][1]["id"]},
        ]

    cases = [
        (
            _restore(cloud, backup, ok_target["id"], both(ok_target), provider_id="x"),
            (400, "CSBS.9001"),
        ),
        (_restore(cloud, backup, "nope", both(ok_target)), (400, "CSBS.6000")),
        (_restore(cloud, backup, running["id"], both(running)), (400, "CSBS.6006")),
        (_restore(cloud, backup, small["id"], both(small)), (400, "CSBS.6024")),
        (_restore(cloud, backup, ok_target["id"], both(ok_target)[:1]), (400, "CSBS.6018")),
        (
            _restore(
                cloud,
                backup,
                ok_target["id"],
                [{"backup_id": "zzz", "volume_id": td[0]}, both(ok_target)[1]],
            ),
            (400, "CSBS.6017"),
        ),
        (
            _restore(
                cloud,
                backup,
                ok_target["id"],
                [both(ok_target)[0], {"backup_id": vb[1], "volume_id": "zzz"}],
            ),
            (400, "CSBS.6014"),
        ),
        (
            _restore(
                cloud,
                backup,
                ok_target["id"],
                [
                    {"backup_id": vb[0], "volume_id": td[1]},
                    {"backup_id": vb[1], "volume_id": td[0]},
                ],
            ),
            (400, "CSBS.6023"),
        ),
        (
            _restore(cloud, backup, ok_target["id"], both(ok_target), checkpoint_id="other"),
            (404, "CSBS.3001"),
        ),
    ]
    for got, want in cases:
        assert _code(got) == want, got.text
    assert cloud.env.client.get(f"/v1/{cloud.pid}/restores", headers=cloud.headers()).json() == {
        "restores": []
    }
    item = cloud.env.client.get(
        f"/v1/{cloud.pid}/checkpoint_items/{backup['id']}", headers=cloud.headers()
    ).json()
    assert item["checkpoint_item"]["status"] == "available"

    # R3 says the same as S1 would.
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/resources/action",
        headers=cloud.headers(),
        json={
            "check_restorable": [
                {
                    "checkpoint_item_id": backup["id"],
                    "target": {
                        "resource_id": ok_target["id"],
                        "resource_type": "OS::Nova::Server",
                        "volumes": both(ok_target),
                    },
                },
                {
                    "checkpoint_item_id": backup["id"],
                    "target": {
                        "resource_id": small["id"],
                        "resource_type": "OS::Nova::Server",
                        "volumes": both(small),
                    },
                },
            ]
        },
    )
    assert r.status_code == 200
    result = r.json()["restorable"]
    assert [x["result"] for x in result] == [True, False]
    assert result[1]["error_code"] == "CSBS.6024"


def test_vanished_disk_ends_in_error_and_audit_stays_clean(cloud: Cloud) -> None:
    disk = cloud.blank("gone", 4)
    server = cloud.server("web1", [disk])
    cloud.worker.stop(grace=1)  # keep the task waiting while the disk disappears
    r = cloud.protect(server["id"])
    item = cloud.item_of(r.json()["checkpoint"]["id"])
    disk.unlink()
    from csbs import app as composition

    worker = composition.make_worker(cloud.env.runtime, concurrency=2)
    worker.start()
    try:
        failed = cloud.wait_backup(item["id"])
    finally:
        worker.stop(grace=2)
        cloud.worker.start = lambda: None  # type: ignore[method-assign]
    assert failed["status"] == "error"
    assert failed["extend_info"]["fail_op"] == "backup"
    assert "does not exist" in failed["extend_info"]["fail_reason"]
    report = cloud.env.services.repository.check(cloud.pid)
    assert report.ok, report


def test_list_query_paging(cloud: Cloud) -> None:
    ids = []
    for n in ("a1", "a2", "a3"):
        server = cloud.server(n, [cloud.blank(n, 1)])
        r = cloud.protect(server["id"], backup_name=f"bk_{n}")
        ids.append(cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])["id"])
    base = f"/v1/{cloud.pid}/checkpoint_items"
    r = cloud.env.client.get(f"{base}?limit=2&sort=name:asc", headers=cloud.headers()).json()
    assert [x["name"] for x in r["checkpoint_items"]] == ["bk_a1", "bk_a2"]
    assert r["checkpoint_items_links"][0]["rel"] == "next"
    href = r["checkpoint_items_links"][0]["href"].replace("http://testserver", "")
    r2 = cloud.env.client.get(href, headers=cloud.headers()).json()
    assert [x["name"] for x in r2["checkpoint_items"]] == [
        "bk_a3"
    ] and "checkpoint_items_links" not in r2
    assert cloud.env.client.get(f"{base}/count?name=a2", headers=cloud.headers()).json() == {
        "count": 1
    }
    # The name filter is a substring: `%` and `_` in it are literal, never wildcards.
    for name, count in (("k_a", 3), ("b_", 0), ("%", 0), ("bk%a", 0), ("/", 0)):
        r = cloud.env.client.get(f"{base}/count", params={"name": name}, headers=cloud.headers())
        assert r.json() == {"count": count}, name
    assert cloud.env.client.get(
        f"{base}/count?status=available", headers=cloud.headers()
    ).json() == {"count": 3}
    assert cloud.env.client.get(f"{base}/count?az=elsewhere", headers=cloud.headers()).json() == {
        "count": 0
    }
    assert cloud.env.client.get(f"{base}?status=bogus", headers=cloud.headers()).status_code == 400
    assert (
        cloud.env.client.get(f"{base}/{ids[0]}x", headers=cloud.headers()).json()["error_code"]
        == "CSBS.3001"
    )
    r = cloud.env.client.get(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints", headers=cloud.headers()
    ).json()
    assert len(r["checkpoints"]) == 3
