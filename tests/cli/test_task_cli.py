"""`csbs task list|show|wait` against both engines."""

from __future__ import annotations

import threading
from pathlib import Path

from typer.testing import CliRunner

from csbs import app as composition
from csbs.cli import app
from csbs.config import Settings
from csbs.queue import EnqueueRequest, TaskStatus

runner = CliRunner()


def test_task_commands(tmp_path: Path, db_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url)
    runtime = composition.build(settings)
    composition.prepare(runtime)
    store = runtime.services.tasks
    pid = runtime.services.identity.create_project("proj1").id
    ok = store.enqueue_one(EnqueueRequest(pid, "delete"))
    bad = store.enqueue_one(EnqueueRequest(pid, "delete"))
    common = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]
    try:
        for project in ("proj1", pid):  # a name or an id
            listed = runner.invoke(app, ["task", "list", "--project", project, *common])
            assert listed.exit_code == 0, listed.output
            assert "waiting" in listed.output and listed.output.count("delete") == 2
        unknown = runner.invoke(app, ["task", "list", "--project", "nope", *common])
        assert unknown.exit_code == 1 and "'nope' not found" in unknown.output

        shown = runner.invoke(app, ["task", "show", ok.id, *common])
        assert shown.exit_code == 0 and ok.id in shown.output

        def finish_later() -> None:
            for task, status in ((ok, TaskStatus.SUCCESS), (bad, TaskStatus.FAILED)):
                claimed = store.claim("w", None, ["delete"])
                assert claimed is not None and claimed.id == task.id
                store.finish(
                    claimed,
                    "w",
                    status,
                    error={"code": "CSBS.9999", "message": "broke"}
                    if status is TaskStatus.FAILED
                    else None,
                )

        t = threading.Timer(0.5, finish_later)
        t.start()
        waited = runner.invoke(app, ["task", "wait", ok.id, "--timeout", "20", *common])
        t.join()
        assert waited.exit_code == 0, waited.output
        assert "success" in waited.output
        failed = runner.invoke(app, ["task", "wait", bad.id, "--timeout", "20", *common])
        assert failed.exit_code == 1
        assert "failed" in failed.output
        missing = runner.invoke(app, ["task", "show", "nope", *common])
        assert missing.exit_code == 1
        store.enqueue_one(EnqueueRequest("another", "delete"))
        for project in ("proj1", pid):  # the other project's task is not listed
            listed = runner.invoke(app, ["task", "list", "--project", project, *common])
            assert listed.exit_code == 0 and listed.output.count("delete") == 2, listed.output
    finally:
        runtime.close()
