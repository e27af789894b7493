"""`csbs server add|list|show|set-status|remove`."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from csbs.cli import app

runner = CliRunner()


def test_server_commands(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--database-url", db_url]
    assert runner.invoke(app, ["db", "upgrade", *common]).exit_code == 0
    (data / "disks").mkdir(parents=True, exist_ok=True)
    disk = data / "disks" / "a.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    added = runner.invoke(
        app, ["server", "add", "--project", "admin", "--name", "web1", "--disk", str(disk), *common]
    )
    assert added.exit_code == 0, added.output
    server_id = added.output.strip()
    assert "web1" in runner.invoke(app, ["server", "list", *common]).output
    shown = runner.invoke(app, ["server", "show", server_id, *common])
    assert "/dev/vda" in shown.output and "1048576" in shown.output
    assert (
        runner.invoke(app, ["server", "set-status", server_id, "running", *common]).exit_code == 0
    )
    assert "running" in runner.invoke(app, ["server", "list", "--project", "admin", *common]).output
    refused = runner.invoke(
        app,
        ["server", "add", "--project", "admin", "--name", "x", "--disk", "/etc/passwd", *common],
    )
    assert refused.exit_code == 1 and "outside the inventory roots" in refused.output
    assert runner.invoke(app, ["server", "remove", server_id, *common]).exit_code == 0
    assert runner.invoke(app, ["server", "show", server_id, *common]).exit_code == 1
