"""A tenant who can change the files beneath an inventory root cannot make a backup read, or
a restore write, a file outside it: not by swapping a symlink in while the task runs, not
through a symlinked directory, not through a hard link."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tasks.conftest import Cloud

#: Iterations of each race; the unconfined code leaked on about one backup in four.
ROUNDS = 16
SIZE = 1 << 20
INSIDE = b"inside!!" * (SIZE // 8)
OUTSIDE = b"OUTSIDE!" * (SIZE // 8)


class Swapper:
    """Swaps `victim` with a symlink to `target`, over and over, from another process."""

    def __init__(self, victim: Path, target: Path) -> None:
        self.victim = victim
        self.link = victim.with_name("swap.lnk")
        self.link.symlink_to(target)
        self.swaps = 0

    def __enter__(self) -> Swapper:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.swapper", str(self.victim), str(self.link)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=30)
        self.swaps = int(out.strip())
        assert not self.victim.is_symlink() and self.link.is_symlink()


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    secret = tmp_path / "outside" / "secret.img"
    secret.parent.mkdir()
    secret.write_bytes(OUTSIDE)
    yield secret
    assert secret.read_bytes() == OUTSIDE, "a file outside the roots was written"


def _backup(cloud: Cloud, server_id: str) -> dict[str, Any]:
    r = cloud.protect(server_id)
    assert r.status_code == 200, r.text
    return cloud.wait_backup(cloud.item_of(r.json()["checkpoint"]["id"])["id"])


def _stored_image(cloud: Cloud, item: dict[str, Any]) -> bytes:
    """What the repository holds for the backup's one disk, read back through a restore."""
    services = cloud.env.services
    backup = services.backups.get(None, item["id"])
    out = io.BytesIO()
    services.repository.restore(
        cloud.pid,
        str(backup.extra["repository_backup_id"]),
        backup.disks[0].disk_id,
        out,
    )
    return out.getvalue()


def _restore(cloud: Cloud, item: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    r = cloud.start_restore(item, server)
    assert r.status_code == 200, r.text
    return cloud.wait_restore(r.json()["restore"]["id"])


def test_symlink_swapped_in_during_backups_and_restores(cloud: Cloud, outside: Path) -> None:
    victim = cloud.root / "race" / "victim.img"
    victim.parent.mkdir()
    victim.write_bytes(INSIDE)
    server = cloud.server("victim", [victim])
    good = _backup(cloud, server["id"])
    assert good["status"] == "available"

    outcomes: list[str] = []
    with Swapper(victim, outside) as swapper:
        for _ in range(ROUNDS):
            item = _backup(cloud, server["id"])
            outcomes.append(item["status"])
            if item["status"] == "available":
                assert _stored_image(cloud, item) == INSIDE  # never the outside file
        for _ in range(ROUNDS):
            outcomes.append(_restore(cloud, good, server)["status"])
    assert swapper.swaps > 2 * ROUNDS
    assert len(outcomes) == 2 * ROUNDS
    assert set(outcomes) <= {"available", "error", "success", "fail"}
    assert victim.read_bytes() == INSIDE  # restores wrote only the registered file


def test_directory_swapped_for_a_symlink(cloud: Cloud, outside: Path) -> None:
    (cloud.root / "vm").mkdir()
    disk = cloud.root / "vm" / "secret.img"
    disk.write_bytes(INSIDE)
    server = cloud.server("vm", [disk])
    good = _backup(cloud, server["id"])
    assert good["status"] == "available"
    # The directory becomes a symlink to the outside file's directory (same leaf name).
    (cloud.root / "vm").rename(cloud.root / "vm.old")
    (cloud.root / "vm").symlink_to(outside.parent, target_is_directory=True)
    item = _backup(cloud, server["id"])
    assert item["status"] == "error"
    assert "symlink" in item["extend_info"]["fail_reason"]
    assert _restore(cloud, good, server)["status"] == "fail"
    # Registering through a symlinked directory is refused too.
    r = cloud.env.client.post(
        f"/v1/{cloud.pid}/servers",
        headers=cloud.headers(cloud.admin),
        json={"server": {"name": "via-link", "disks": [{"path": str(disk)}]}},
    )
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"


def test_hard_links(cloud: Cloud, outside: Path) -> None:
    linked = cloud.root / "linked.img"
    os.link(outside, linked)

    def register(name: str, path: Path, **extra: Any) -> Any:
        return cloud.env.client.post(
            f"/v1/{cloud.pid}/servers",
            headers=cloud.headers(cloud.admin),
            json={"server": {"name": name, "disks": [{"path": str(path)}], **extra}},
        )

    r = register("hl", linked)
    assert r.status_code == 400 and "hard link" in r.json()["error_msg"]

    # A registered disk later replaced by a hard link to the outside file.
    disk = cloud.root / "plain.img"
    disk.write_bytes(INSIDE)
    server = cloud.server("plain", [disk])
    good = _backup(cloud, server["id"])
    assert good["status"] == "available"
    disk.unlink()
    os.link(outside, disk)
    item = _backup(cloud, server["id"])
    assert item["status"] == "error"
    assert _restore(cloud, good, server)["status"] == "fail"

    # The service's own files are refused even where an admin allows hard links.
    key = cloud.env.runtime.settings.effective_master_key_file
    assert key.exists()
    os.link(key, cloud.root / "key.img")
    r = register("key", cloud.root / "key.img", allow_hardlinks=True)
    assert r.status_code == 400 and "service itself" in r.json()["error_msg"]
    # Otherwise an admin's allowance is honoured.
    assert register("allowed", linked, allow_hardlinks=True).status_code == 200


def test_a_restore_never_creates_the_target(cloud: Cloud) -> None:
    disk = cloud.root / "gone.img"
    disk.write_bytes(INSIDE)
    server = cloud.server("gone", [disk])
    good = _backup(cloud, server["id"])
    disk.unlink()
    assert _restore(cloud, good, server)["status"] == "fail"
    assert not disk.exists()
