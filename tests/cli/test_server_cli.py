"""`csbs server add|list|show|set-status|remove`."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from csbs.cli import app
from csbs.db.engine import Database, create_engine
from csbs.domain.clock import SystemClock
from csbs.services.discovery import HostWatcher
from tests.support.libvirt import URI, libvirt_domains

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


def test_server_assign_gives_a_discovered_domain_to_a_project(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--database-url", db_url]
    assert runner.invoke(app, ["db", "upgrade", *common]).exit_code == 0
    engine = create_engine(db_url)
    try:
        with libvirt_domains() as vms:
            dom = vms.define()
            HostWatcher(Database(engine), SystemClock(), "kvm-cli", URI).sync_once()
    finally:
        engine.dispose()
    sid = dom.UUIDString()
    listed = runner.invoke(app, ["server", "list", "--unassigned", *common])
    assert listed.exit_code == 0 and sid in listed.output and "libvirt" in listed.output
    assert sid not in runner.invoke(app, ["server", "list", "--project", "admin", *common]).output
    refused = runner.invoke(app, ["backup", "create", sid, *common])
    assert refused.exit_code == 1 and "belongs to no project" in refused.output
    done = runner.invoke(app, ["server", "assign", sid, "--project", "admin", *common])
    assert done.exit_code == 0, done.output
    assert "source=libvirt" in done.output and ".qcow2" in done.output  # its image
    assert sid in runner.invoke(app, ["server", "list", "--project", "admin", *common]).output
    assert sid not in runner.invoke(app, ["server", "list", "--unassigned", *common]).output
    missing = runner.invoke(app, ["server", "assign", "no-such", "--project", "admin", *common])
    assert missing.exit_code == 1 and "does not exist" in missing.output
