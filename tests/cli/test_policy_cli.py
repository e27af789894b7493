"""`csbs policy create|list|show|update|run|delete`, with the short schedule forms."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from csbs.cli import app

runner = CliRunner()


def test_policy_commands(tmp_path: Path, db_url: str) -> None:
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
    server_id = added.output.strip()
    made = runner.invoke(
        app,
        [
            "policy", "create", "nightly", "--project", "admin", "--schedule",
            "weekly mon,thu 12:27", "--timezone", "Europe/Berlin", "--server", server_id,
            "--keep", "7", *common,
        ],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    policy_id = made.output.strip()
    shown = runner.invoke(app, ["policy", "show", policy_id, *common])
    assert "FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=12;BYMINUTE=27" in shown.output
    assert "Europe/Berlin" in shown.output and "'max_backups': 7" in shown.output
    assert "web1" in shown.output
    listed = runner.invoke(app, ["policy", "list", "--project", "admin", *common])
    assert policy_id in listed.output and "nightly" in listed.output
    bad = runner.invoke(
        app, ["policy", "create", "x", "--project", "admin", "--schedule", "hourly", *common]
    )
    assert bad.exit_code == 1 and "CSBS.9001" in bad.output
    dup = runner.invoke(
        app, ["policy", "create", "y", "--project", "admin", "--schedule", "daily 01:00",
              "--server", server_id, *common]
    )  # fmt: skip
    assert dup.exit_code == 1 and "CSBS.6004" in dup.output
    changed = runner.invoke(
        app,
        ["policy", "update", policy_id, "--disable", "--schedule", "every 2 days 03:00",
         "--keep-days", "30", *common],
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert "INTERVAL=2" in changed.output and "disabled" in changed.output
    assert (
        "'max_backups': 7" in changed.output and "'retention_duration_days': 30" in changed.output
    )
    ran = runner.invoke(app, ["policy", "run", policy_id, *common])
    assert ran.exit_code == 0, ran.output
    assert "of web1" in ran.output
    record = ran.stdout.splitlines()[0].strip()
    shown = runner.invoke(app, ["policy", "show", policy_id, *common])
    assert f"manual record {record}" in shown.output
    again = runner.invoke(app, ["policy", "run", policy_id, *common])
    assert again.exit_code == 1 and "CSBS.2004" in again.output
    assert runner.invoke(app, ["policy", "delete", policy_id, *common]).exit_code == 0
    gone = runner.invoke(app, ["policy", "show", policy_id, *common])
    assert gone.exit_code == 1 and "CSBS.3000" in gone.output
