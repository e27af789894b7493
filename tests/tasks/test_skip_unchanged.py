"""An image file unchanged since the previous backup is not read again (issue 21, item 2).

Unchanged means its size, modification and change times, inode and device equal what the
previous backup recorded; the new backup then references the previous one's chunks and is
a complete image of its own: it restores directly, and deleting either backup leaves the
other whole.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import pytest

from csbs.domain.backups import RACY_SECONDS, FileFacts
from tests.tasks.conftest import PROVIDER, Cloud

SIZE = 3 * 1024 * 1024  # 12 chunks of the test deployment's 256 KiB


def _image(cloud: Cloud, name: str) -> Path:
    path = cloud.root / f"{name}.img"
    path.write_bytes(os.urandom(SIZE))
    return path


def _settle() -> None:
    """Facts taken within `RACY_SECONDS` of a change are not trusted: let them settle."""
    time.sleep(RACY_SECONDS + 0.1)


def _backup(cloud: Cloud, server_id: str, **param: Any) -> dict[str, Any]:
    r = cloud.protect(server_id, **param)
    assert r.status_code == 200, r.text
    done = cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])
    assert done["status"] == "available", done["extend_info"]["fail_reason"]
    return done


def _skipped(item: dict[str, Any]) -> list[bool]:
    return [v["skipped_unchanged"] for v in item["extend_info"]["volume_backups"]]


def _restored(cloud: Cloud, item: dict[str, Any], name: str) -> bytes:
    target = cloud.server(name, [cloud.blank(name, 4)])
    r = cloud.start_restore(item, target)
    assert r.status_code == 200, r.text
    done = cloud.wait_restore(r.json()["restore"]["id"])
    assert done["status"] == "success", done
    return Path(target["disks"][0]["path"]).read_bytes()[:SIZE]


def _delete(cloud: Cloud, item: dict[str, Any]) -> None:
    r = cloud.env.client.delete(
        f"/v1/{cloud.pid}/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}",
        headers=cloud.headers(),
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = cloud.env.client.get(
            f"/v1/{cloud.pid}/checkpoint_items/{item['id']}", headers=cloud.headers()
        )
        if got.status_code == 404:
            return
        time.sleep(0.05)
    raise AssertionError("backup not deleted")


def test_unchanged_file_is_not_read_and_either_backup_survives_the_other(cloud: Cloud) -> None:
    image = _image(cloud, "steady")
    content = image.read_bytes()
    server = cloud.server("steady", [image])
    _settle()
    first = _backup(cloud, server["id"])
    assert first["extend_info"]["bytes_read"] == SIZE
    assert _skipped(first) == [False]

    second = _backup(cloud, server["id"])
    ext = second["extend_info"]
    assert ext["bytes_read"] == 0  # nothing read at all
    assert _skipped(second) == [True]
    assert ext["new_bytes"] == 0 and ext["reused_bytes"] == SIZE
    assert ext["volume_backups"][0]["size"] == SIZE >> 20
    task = cloud.env.client.get(
        f"/v1/{cloud.pid}/operation_logs/{ext['taskid']}", headers=cloud.headers()
    )
    assert task.status_code == 200, task.text
    assert task.json()["operation_log"]["extra_info"]["bytes_read"] == 0
    repository = cloud.env.services.repository
    report = repository.check(cloud.pid)
    assert report.ok, report

    # Delete the backup whose chunks the second reuses: the second still restores.
    _delete(cloud, first)
    assert _restored(cloud, second, "after-first-gone") == content
    report = repository.check(cloud.pid, read_data=True)
    assert report.ok, report

    # A third, still unchanged, reuses the second; deleting the second leaves the third.
    third = _backup(cloud, server["id"])
    assert third["extend_info"]["bytes_read"] == 0
    _delete(cloud, second)
    repository.sweep(cloud.pid)  # the test deployment's grace is 0
    assert _restored(cloud, third, "after-second-gone") == content
    report = repository.check(cloud.pid, read_data=True)
    assert report.ok, report
    assert repository.usage(cloud.pid).logical_bytes == SIZE


def _grow(image: Path) -> None:
    with open(image, "ab") as f:
        f.write(os.urandom(256 * 1024))


def _touch(image: Path) -> None:
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _chmod(image: Path) -> None:
    image.chmod(0o640 if (image.stat().st_mode & 0o777) != 0o640 else 0o600)


def _replace(image: Path) -> None:
    """The same bytes in a new file renamed over the old one: a new inode."""
    fresh = image.with_suffix(".new")
    fresh.write_bytes(image.read_bytes())
    os.rename(fresh, image)


@pytest.mark.parametrize(
    ("fact", "change"),
    [("size", _grow), ("mtime", _touch), ("ctime", _chmod), ("inode", _replace)],
)
def test_any_changed_fact_reads_everything(cloud: Cloud, fact: str, change: Any) -> None:
    image = _image(cloud, f"changing-{fact}")
    server = cloud.server(f"changing-{fact}", [image])
    _settle()
    _backup(cloud, server["id"])
    before = os.stat(image)
    change(image)
    after = os.stat(image)
    # Only the fact under test moved (a new size also moves the times, as a write does).
    moved = {
        "size": before.st_size != after.st_size,
        "mtime": before.st_mtime_ns != after.st_mtime_ns,
        "ctime": before.st_ctime_ns != after.st_ctime_ns,
        "inode": before.st_ino != after.st_ino,
    }
    assert moved[fact]
    if fact == "inode":
        cloud.env.services.inventory.refresh(server["id"])  # an admin accepts the new file
    second = _backup(cloud, server["id"])
    assert _skipped(second) == [False]
    assert second["extend_info"]["bytes_read"] == after.st_size
    report = cloud.env.services.repository.check(cloud.pid)
    assert report.ok, report


def test_full_read_reads_an_unchanged_file(cloud: Cloud) -> None:
    image = _image(cloud, "forced")
    server = cloud.server("forced", [image])
    _settle()
    _backup(cloud, server["id"])
    # R1's `incremental: false` asks for a full backup: every disk read.
    forced = _backup(cloud, server["id"], incremental=False)
    assert forced["extend_info"]["bytes_read"] == SIZE
    assert _skipped(forced) == [False]
    assert forced["extend_info"]["incremental"] is False
    # Without it the same file is skipped.
    assert _backup(cloud, server["id"])["extend_info"]["bytes_read"] == 0


def test_every_fact_takes_part_in_the_comparison() -> None:
    """Every one of the five facts, device included, takes part in the comparison (a
    file moved to another device cannot be arranged in a test)."""
    settled = 10 * 10**9
    base = FileFacts(size=SIZE, mtime_ns=1, ctime_ns=2, inode=3, device=4, taken_ns=settled)
    now = dataclasses.replace(base, taken_ns=settled + 5)
    assert now.unchanged_since(base)
    for field, value in (
        ("size", SIZE + 1),
        ("mtime_ns", 5),
        ("ctime_ns", 5),
        ("inode", 5),
        ("device", 5),
    ):
        assert not dataclasses.replace(now, **{field: value}).unchanged_since(base), field
    # Facts the previous backup took while the file was still being written are not trusted.
    racy = dataclasses.replace(base, taken_ns=base.ctime_ns + int(RACY_SECONDS * 1e9) // 2)
    assert not now.unchanged_since(racy)
    assert FileFacts.from_dict(base.as_dict()) == base
    assert FileFacts.from_dict({"size": 1}) is None
