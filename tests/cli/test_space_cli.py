"""`csbs backup create --full-read`, and the space pending release in `csbs repo check` and
`csbs admin quota show` (issue 21, items 2 and 3)."""

from __future__ import annotations

import os
import re
import time

from typer.testing import CliRunner

from csbs.cli import app
from csbs.domain.backups import RACY_SECONDS
from tests.tasks.conftest import Cloud

runner = CliRunner()


def test_full_read_and_pending_release(slow_sweep_cloud: Cloud) -> None:
    cloud = slow_sweep_cloud
    settings = cloud.env.runtime.settings
    common = ["--data-dir", str(settings.data_dir), "--database-url", str(settings.database_url)]
    image = cloud.root / "cli-space.img"
    image.write_bytes(os.urandom(1 << 20))
    server = cloud.server("clispace", [image])
    time.sleep(RACY_SECONDS + 0.1)  # facts taken right after a write are not trusted

    def create(*flags: str) -> int:
        done = runner.invoke(app, ["backup", "create", server["id"], "--wait", *flags, *common])
        assert done.exit_code == 0, done.output
        backup = cloud.env.services.backups.get(None, done.stdout.splitlines()[0].strip())
        return int(backup.extra["bytes_read"])

    assert create() == 1 << 20
    assert create() == 0  # unchanged: not read
    assert create("--full-read") == 1 << 20  # asked to read everything

    # Another server's backup, deleted: its chunks wait for the grace and a sweep.
    other = cloud.root / "cli-other.img"
    other.write_bytes(os.urandom(1 << 20))
    doomed = cloud.server("clidoomed", [other])
    made = runner.invoke(app, ["backup", "create", doomed["id"], "--wait", *common])
    backup_id = made.stdout.splitlines()[0].strip()
    checkpoint_id = cloud.env.services.backups.get(None, backup_id).checkpoint_id
    deleted = runner.invoke(app, ["backup", "delete", checkpoint_id, "--wait", *common])
    assert deleted.exit_code == 0, deleted.output

    checked = runner.invoke(app, ["repo", "check", *common])
    assert checked.exit_code == 0, checked.output
    line = re.search(
        r"project \S+: (\d+) bytes stored, (\d+) bytes pending release by (\S+)", checked.output
    )
    assert line is not None, checked.output
    assert int(line[1]) > 0 and int(line[2]) > 1 << 19
    shown = runner.invoke(app, ["admin", "quota", "show", "--project", "alpha", *common])
    assert shown.exit_code == 0, shown.output
    assert "pending release" in shown.output and line[2] in shown.output

    cloud.worker_runtime.services.maintenance.enqueue(cloud.pid)  # what the scheduler does
    deadline = time.monotonic() + 30
    while True:
        checked = runner.invoke(app, ["repo", "check", *common])
        if "0 bytes pending release" in checked.output:
            break
        assert time.monotonic() < deadline, checked.output
        time.sleep(0.3)
        cloud.worker_runtime.services.maintenance.enqueue(cloud.pid)
    assert checked.exit_code == 0, checked.output
