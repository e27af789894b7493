"""Back up a server with two ext4 disks through HTTP, again incrementally, restore onto
another server, and check the bytes and the filesystems."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.tasks.conftest import PROVIDER, Cloud


def _files(version: int) -> dict[str, bytes]:
    rnd = os.urandom  # incompressible content, so dedup (not compression) makes the saving
    files = {f"data/blob{i}.bin": rnd(300_000) for i in range(8)}
    files["etc/hostname"] = b"web1\n"
    files["var/log/app.log"] = b"line\n" * (20_000 * version)
    return files


def test_backup_incremental_restore_roundtrip(cloud: Cloud) -> None:
    sys_files = _files(1)
    sys_img = cloud.ext4_image("sys", 32, sys_files)
    data_img = cloud.ext4_image("data", 16, {"db/table.dat": os.urandom(2_000_000)})
    server = cloud.server("web1", [sys_img, data_img])
    target = cloud.server("web2", [cloud.blank("t-sys", 32), cloud.blank("t-data", 24)])

    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/resources/action",
        headers=cloud.headers(),
        json={
            "check_protectable": [
                {"resource_id": server["id"], "resource_type": "OS::Nova::Server"}
            ]
        },
    )
    assert r.json() == {
        "protectable": [
            {"resource_id": server["id"], "resource_type": "OS::Nova::Server", "result": True}
        ]
    }

    first_sys = sys_img.read_bytes()
    first_data = data_img.read_bytes()
    r = cloud.protect(server["id"], backup_name="first", description="before the change")
    assert r.status_code == 200, r.text
    checkpoint = r.json()["checkpoint"]
    assert checkpoint["status"] == "protecting"
    assert checkpoint["protection_plan"]["resources"][0]["id"] == server["id"]
    item = cloud.item_of(checkpoint["id"])  # listable at once
    assert item["name"] == "first"
    first = cloud.wait_backup(item["id"])
    assert first["status"] == "available", first["extend_info"]["fail_reason"]
    ext = first["extend_info"]
    assert ext["progress"] == 100 and ext["incremental"] is False
    assert len(ext["volume_backups"]) == 2
    assert ext["volume_backups"][0]["bootable"] is True
    assert ext["new_bytes"] > 4_000_000  # the random content was stored
    assert first["protected_at"] is not None

    # Change some files and back up again: the new backup reuses what did not change.
    changed = dict(sys_files)
    changed["var/log/app.log"] = b"line\n" * 40_000
    changed["data/blob0.bin"] = os.urandom(300_000)
    cloud.ext4_image("sys", 32, changed)
    r = cloud.protect(server["id"], backup_name="second")
    second = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert second["status"] == "available"
    assert second["extend_info"]["incremental"] is True
    assert second["extend_info"]["reused_bytes"] > 0
    assert second["extend_info"]["new_bytes"] < ext["new_bytes"] / 2

    # Restore the first backup onto web2.
    vb = first["extend_info"]["volume_backups"]
    body = {
        "restore": {
            "provider_id": PROVIDER,
            "checkpoint_id": first["checkpoint_id"],
            "parameters": {
                "checkpoint_item_id": first["id"],
                "power_on": True,
                "targets": {
                    "server_id": target["id"],
                    "volumes": [
                        {"backup_id": vb[0]["id"], "volume_id": target["disks"][0]["id"]},
                        {"backup_id": vb[1]["id"], "volume_id": target["disks"][1]["id"]},
                    ],
                },
            },
        }
    }
    r = cloud.env.client.post(f"/v1/{cloud.pid}/restores", headers=cloud.headers(), json=body)
    assert r.status_code == 200, r.text
    restore = r.json()["restore"]
    assert restore["status"] == "in_progress"
    done = cloud.wait_restore(restore["id"])
    assert done["status"] == "success", done
    assert cloud.wait_backup(first["id"])["status"] == "available"

    t_sys = target["disks"][0]["path"]
    t_data = target["disks"][1]["path"]
    with open(t_sys, "rb") as f:
        assert f.read() == first_sys
    with open(t_data, "rb") as f:
        assert f.read(len(first_data)) == first_data
    for path in (t_sys,):
        e2fsck = shutil.which("e2fsck", path="/usr/sbin:/sbin:/usr/bin:/bin") or "e2fsck"
        check = subprocess.run([e2fsck, "-fn", path], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    server2 = cloud.env.client.get(
        f"/v1/{cloud.pid}/servers/{target['id']}", headers=cloud.headers()
    ).json()
    assert server2["server"]["status"] == "running"  # power_on
    # The audit finds the repository exact.
    report = cloud.env.services.repository.check(cloud.pid, read_data=True)
    assert report.ok, report


def test_s3_repository_and_concurrent_backups(s3_cloud: Cloud) -> None:
    cloud = s3_cloud
    servers = []
    for n in ("s1", "s2"):
        disk = cloud.ext4_image(n, 8, {"f.bin": os.urandom(500_000), "same.txt": b"shared" * 1000})
        servers.append((cloud.server(n, [disk]), disk.read_bytes()))
    items = []
    for server, _ in servers:  # both backups run at once
        r = cloud.protect(server["id"])
        assert r.status_code == 200, r.text
        items.append(cloud.item_of(r.json()["checkpoint"]["id"]))
    done = [cloud.wait_backup(i["id"]) for i in items]
    assert [d["status"] for d in done] == ["available", "available"]
    target = cloud.server("t", [cloud.blank("t", 8)])
    vb = done[1]["extend_info"]["volume_backups"][0]["id"]
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/restores",
        headers=cloud.headers(),
        json={
            "restore": {
                "provider_id": PROVIDER,
                "checkpoint_id": done[1]["checkpoint_id"],
                "parameters": {
                    "checkpoint_item_id": done[1]["id"],
                    "power_on": False,
                    "targets": {
                        "server_id": target["id"],
                        "volumes": [{"backup_id": vb, "volume_id": target["disks"][0]["id"]}],
                    },
                },
            }
        },
    )
    assert cloud.wait_restore(r.json()["restore"]["id"])["status"] == "success"
    with open(target["disks"][0]["path"], "rb") as f:
        assert f.read() == servers[1][1]
    assert cloud.env.services.repository.check(cloud.pid, read_data=True).ok
