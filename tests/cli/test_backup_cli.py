"""`csbs backup create|list|show|count` and `csbs restore`, with a worker running."""

from __future__ import annotations

from typer.testing import CliRunner

from csbs.cli import app
from tests.tasks.conftest import Cloud

runner = CliRunner()


def test_backup_and_restore_commands(cloud: Cloud) -> None:
    settings = cloud.env.runtime.settings
    common = ["--data-dir", str(settings.data_dir), "--database-url", str(settings.database_url)]
    src_disk = cloud.blank("cli-src", 2)
    with open(src_disk, "r+b") as f:
        f.write(b"hello from the cli" * 1000)
    src = cloud.server("clisrc", [src_disk])
    dst = cloud.server("clidst", [cloud.blank("cli-dst", 2)])
    created = runner.invoke(
        app, ["backup", "create", src["id"], "--name", "clibk", "--wait", *common]
    )
    assert created.exit_code == 0, created.output
    backup_id = created.stdout.splitlines()[0].strip()
    listed = runner.invoke(app, ["backup", "list", "--project", "alpha", *common])
    assert "clibk" in listed.output and "available" in listed.output
    assert (
        runner.invoke(app, ["backup", "count", "--project", "alpha", *common]).output.strip() == "1"
    )
    shown = runner.invoke(app, ["backup", "show", backup_id, *common])
    assert "consistency" in shown.output and "/dev/vda" in shown.output
    restored = runner.invoke(app, ["restore", backup_id, "--to", dst["id"], "--wait", *common])
    assert restored.exit_code == 0, restored.output
    assert open(dst["disks"][0]["path"], "rb").read() == src_disk.read_bytes()
    refused = runner.invoke(app, ["restore", backup_id, "--to", "nope", *common])
    assert refused.exit_code == 1 and "CSBS.6000" in refused.output
    verified = runner.invoke(app, ["repo", "verify", backup_id, *common])
    assert verified.exit_code == 0 and "all verified" in verified.output, verified.output
    assert runner.invoke(app, ["repo", "check", "--read-data", *common]).exit_code == 0
    checkpoint_id = cloud.env.services.backups.get(None, backup_id).checkpoint_id
    deleted = runner.invoke(
        app, ["backup", "delete", checkpoint_id, "--item", backup_id, "--wait", *common]
    )
    assert deleted.exit_code == 0, deleted.output
    assert runner.invoke(app, ["backup", "show", backup_id, *common]).exit_code == 1
    tasks = runner.invoke(app, ["task", "list", "--type", "delete", "--status", "success", *common])
    assert deleted.stdout.splitlines()[0].strip() in tasks.output
