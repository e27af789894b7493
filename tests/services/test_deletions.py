"""Accepting a DELETE (B2) through the service: what it writes, what it refuses, and that
PostgreSQL's one-statement accept writes exactly what the general path writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db.queries import backups as q
from csbs.domain import errors
from csbs.domain.backups import BackupBusy, BackupStatus, CheckpointNotFound
from csbs.domain.ids import new_id
from csbs.queue import TaskFilter
from csbs.queue.schema import task_queues, tasks
from csbs.services.backups import ProtectRequest
from csbs.services.inventory import DiskSpec
from tests.support.runtime import Env


def _record(env: Env, project_id: str, name: str, statuses: list[BackupStatus]) -> list[str]:
    """A backup record with one backup per status, oldest first; returns the backup ids."""
    root = env.runtime.settings.effective_inventory_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    disk = root / f"{name}.img"
    disk.write_bytes(b"x" * 4096)
    server = env.services.inventory.add_server(project_id, name, [DiskSpec(path=str(disk))])
    _, first = env.services.backups.protect(project_id, ProtectRequest(server.id))
    ids = [first.id]
    with env.services.db.write() as s:
        for i in range(1, len(statuses)):
            later = dataclasses.replace(
                first,
                id=new_id(),
                resource_id=new_id(),
                resource_name=f"{name}-{i}",
                created_at=first.created_at + dt.timedelta(seconds=i),
                disks=(),
                tags=(),
            )
            q.add_backup(s, later)
            ids.append(later.id)
        for backup_id, status in zip(ids, statuses, strict=True):
            q.set_status(s, backup_id, status, env.clock.now())
    return ids


def _state(env: Env, project_id: str) -> tuple[dict[str, tuple[str, str | None]], int]:
    """Each backup's (status, task id), and how many deletion tasks the project has."""
    with env.services.db.read() as s:
        rows = s.execute(sa.text("SELECT id, status, task_id FROM backups")).all()
    n = env.services.tasks.count(TaskFilter(project_id=project_id, operation_type="delete"))
    return {r.id: (r.status, r.task_id) for r in rows}, n


def _task_rows(env: Env, task_ids: list[str]) -> list[dict[str, Any]]:
    """The deletion tasks' rows in queue order, without what differs between two enqueues."""
    with env.services.tasks.engine.connect() as c:
        rows = c.execute(sa.select(tasks).where(tasks.c.id.in_(task_ids)).order_by(tasks.c.seq))
        return [{k: v for k, v in r._mapping.items() if k not in ("seq", "id")} for r in rows.all()]


def test_accept_marks_each_target_and_enqueues_in_order(env: Env) -> None:
    pid = env.project_id("admin")
    a, b, c = _record(
        env, pid, "web", [BackupStatus.AVAILABLE, BackupStatus.ERROR, BackupStatus.AVAILABLE]
    )
    checkpoint = env.services.backups.get(pid, a).checkpoint_id
    env.clock.advance(60)

    # Only the listed backups, in the order listed.
    task_ids = env.services.deletions.delete(pid, checkpoint, [c, a])
    states, n = _state(env, pid)
    assert n == 2 and len(set(task_ids)) == 2
    assert states[c] == ("waiting_delete", task_ids[0])
    assert states[a] == ("waiting_delete", task_ids[1])
    assert states[b][0] == "error"
    got = _task_rows(env, task_ids)
    assert [t["checkpoint_item_id"] for t in got] == [c, a]
    first = got[0]
    assert first["operation_type"] == "delete" and first["status"] == "waiting"
    assert first["params"] == {"backup_id": c}
    assert first["checkpoint_id"] == checkpoint and first["resource_name"] == "web-2"
    assert first["created_at"] == first["not_before"] == env.clock.now()
    assert first["deadline_seconds"] == env.runtime.settings.delete_deadline_seconds
    assert first["attempts"] == 0 and first["progress"] == 0 and first["extra_info"] == {}
    with env.services.tasks.engine.connect() as conn:
        group = conn.execute(
            sa.select(task_queues).where(
                task_queues.c.project_id == pid, task_queues.c.operation_type == "delete"
            )
        ).one()
    assert group.running == 0

    # Then the rest of the record (the error backup), as the whole record is no longer
    # deletable: two of its backups are waiting.
    with pytest.raises(BackupBusy):
        env.services.deletions.delete(pid, checkpoint, None)
    assert env.services.deletions.delete(pid, checkpoint, [b])
    assert _state(env, pid)[1] == 3


def test_refusals_write_nothing(env: Env) -> None:
    pid = env.project_id("admin")
    other = env.services.identity.create_project("other").id
    a, b = _record(env, pid, "web", [BackupStatus.AVAILABLE, BackupStatus.PROTECTING])
    (theirs,) = _record(env, other, "db", [BackupStatus.AVAILABLE])
    checkpoint = env.services.backups.get(pid, a).checkpoint_id
    their_checkpoint = env.services.backups.get(other, theirs).checkpoint_id
    before = _state(env, pid)
    refusals: list[tuple[str, list[str] | None, type[errors.CsbsError], str]] = [
        ("no-such-record", None, CheckpointNotFound, "CSBS.3001"),
        (their_checkpoint, None, CheckpointNotFound, "CSBS.3001"),
        (checkpoint, [a, "no-such-backup"], errors.BackupNotFound, "CSBS.3001"),
        (checkpoint, [a, theirs], errors.BackupNotFound, "CSBS.3001"),
        (checkpoint, None, BackupBusy, "CSBS.2003"),
        (checkpoint, [a, b], BackupBusy, "CSBS.2003"),
    ]
    for record, items, kind, code in refusals:
        with pytest.raises(kind) as raised:
            env.services.deletions.delete(pid, record, items)
        assert raised.value.code == code, (record, items)
        assert _state(env, pid) == before, (record, items)
    assert _state(env, other)[1] == 0
    # The available backup alone may go.
    assert len(env.services.deletions.delete(pid, checkpoint, [a])) == 1


def test_concurrent_deletes_of_one_record_are_accepted_once(env: Env) -> None:
    pid = env.project_id("admin")
    ids = _record(env, pid, "web", [BackupStatus.AVAILABLE] * 3)
    checkpoint = env.services.backups.get(pid, ids[0]).checkpoint_id
    accepted: list[list[str]] = []
    busy: list[Exception] = []
    start = threading.Barrier(8)

    def delete() -> None:
        start.wait()
        try:
            accepted.append(env.services.deletions.delete(pid, checkpoint, None))
        except BackupBusy as e:
            busy.append(e)

    threads = [threading.Thread(target=delete) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 1 and len(busy) == 7
    states, n = _state(env, pid)
    assert n == 3
    assert [states[i] for i in ids] == [("waiting_delete", t) for t in accepted[0]]


def test_one_statement_accept_writes_what_the_general_path_writes(pg_env: Env) -> None:
    """PostgreSQL only: SQLite has the general path alone."""
    env = pg_env
    pid = env.project_id("admin")
    one = _record(env, pid, "one", [BackupStatus.AVAILABLE, BackupStatus.ERROR])
    general = _record(env, pid, "general", [BackupStatus.AVAILABLE, BackupStatus.ERROR])
    service = env.services.deletions
    one_ids = service.delete(pid, env.services.backups.get(pid, one[0]).checkpoint_id, None)
    service._accept = None  # the general path: lock, mark and enqueue, one by one
    general_ids = service.delete(pid, env.services.backups.get(pid, general[0]).checkpoint_id, None)

    def comparable(rows: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
        keyed = ("checkpoint_id", "checkpoint_item_id", "resource_id", "resource_name")
        out = []
        for r in rows:
            r = dict(r, params={"backup_id": names[r["params"]["backup_id"]]})
            out.append({k: names.get(v, v) if k in keyed else v for k, v in r.items()})
        return out

    records = {x: env.services.backups.get(pid, x) for x in [*one, *general]}
    rename_one = {i: f"b{k}" for k, i in enumerate(one)}
    rename_general = {i: f"b{k}" for k, i in enumerate(general)}
    for ids, rename in ((one, rename_one), (general, rename_general)):
        rename[records[ids[0]].checkpoint_id] = "record"
        for k, i in enumerate(ids):
            rename[records[i].resource_id] = f"server{k}"
            rename[records[i].resource_name] = f"name{k}"
    assert comparable(_task_rows(env, one_ids), rename_one) == comparable(
        _task_rows(env, general_ids), rename_general
    )
    states, _ = _state(env, pid)
    assert [states[i] for i in one] == [("waiting_delete", t) for t in one_ids]
    assert [states[i] for i in general] == [("waiting_delete", t) for t in general_ids]


def _checkpoint_exists(env: Env, checkpoint_id: str) -> bool:
    with env.services.db.read() as s:
        found = s.execute(sa.text("SELECT 1 FROM checkpoints WHERE id = :c"), {"c": checkpoint_id})
        return found.first() is not None


def test_a_record_goes_with_its_last_backup(env: Env) -> None:
    pid = env.project_id("admin")
    a, b = _record(env, pid, "web", [BackupStatus.AVAILABLE] * 2)
    checkpoint = env.services.backups.get(pid, a).checkpoint_id
    with env.services.db.write() as s:
        assert q.forget_backup(s, a, checkpoint) is False
    assert _checkpoint_exists(env, checkpoint)
    with env.services.db.write() as s:
        assert q.forget_backup(s, b, checkpoint) is True
    assert not _checkpoint_exists(env, checkpoint)


def test_two_deletions_ending_at_once_remove_the_record(pg_env: Env) -> None:
    """The last two backups of a record, forgotten by two transactions at the same time:
    the second waits for the first's lock on the record, then sees the record empty. Without
    the lock each sees the other's backup still there and the empty record stays forever."""
    env = pg_env
    pid = env.project_id("admin")
    a, b = _record(env, pid, "web", [BackupStatus.AVAILABLE] * 2)
    checkpoint = env.services.backups.get(pid, a).checkpoint_id
    engine = env.services.db.engine
    second_done = threading.Event()
    gone: list[bool] = []

    def second() -> None:
        with engine.begin() as conn, orm.Session(bind=conn) as s:
            gone.append(q.forget_backup(s, b, checkpoint))
            second_done.set()

    with engine.begin() as conn, orm.Session(bind=conn) as s:
        assert q.forget_backup(s, a, checkpoint) is False
        t = threading.Thread(target=second)
        t.start()
        assert not second_done.wait(0.5), "the second deletion did not wait for the first"
    t.join(10)
    assert gone == [True]
    assert not _checkpoint_exists(env, checkpoint)
