"""`csbs worker list`: every registered worker, alive or not; exit 1 when none is alive."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from typer.testing import CliRunner

from csbs import app as composition
from csbs.cli import app
from csbs.config import Settings
from csbs.queue.registry import Registration
from csbs.queue.schema import workers

runner = CliRunner()


def test_worker_list(tmp_path: Path, db_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, worker_stale_seconds=30)
    runtime = composition.build(settings)
    composition.prepare(runtime)
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]
    env = {"CSBS_WORKER_STALE_SECONDS": "30"}
    try:
        none = runner.invoke(app, ["worker", "list", *common], env=env)
        assert none.exit_code == 1, none.output

        registry = runtime.services.tasks.workers
        registry.register(Registration("hv-a:1:aa", "hv-a", "0.1.0", 11, 4))
        listed = runner.invoke(app, ["worker", "list", *common], env=env)
        assert listed.exit_code == 0, listed.output
        line = next(x for x in listed.output.splitlines() if "hv-a" in x)
        assert "hv-a:1:aa" in line and "0.1.0" in line and "yes" in line

        old = runtime.services.clock.now() - dt.timedelta(seconds=60)
        with runtime.services.db.engine.begin() as conn:  # its heartbeat a minute old
            conn.execute(workers.update().values(heartbeat_at=old))
        stale = runner.invoke(app, ["worker", "list", *common], env=env)
        assert stale.exit_code == 1, stale.output
        line = next(x for x in stale.output.splitlines() if "hv-a" in x)
        assert "NO" in line and "60s ago" in line
    finally:
        runtime.close()
