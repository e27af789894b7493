"""Backups written straight into the metadata database, shaped as a finished backup task
leaves them (available, one disk backup per disk, sizes, timestamps), for list and tag tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from csbs.db.queries import backups as q
from csbs.domain.backups import Backup, BackupStatus, Checkpoint, DiskBackup, Tag
from csbs.domain.ids import new_id

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def seed_backup(
    services: Any,
    project_id: str,
    name: str,
    *,
    tags: Sequence[tuple[str, str]] = (),
    created_at: dt.datetime = EPOCH,
    server_id: str | None = None,
    server_name: str = "web1",
    plan_id: str | None = None,
    status: BackupStatus = BackupStatus.AVAILABLE,
) -> Backup:
    """One backup of one server (two disks) in its own backup record, available unless
    `status` says otherwise; made by the policy `plan_id`, or on demand without one."""
    server_id = server_id or new_id()
    cp = Checkpoint(
        id=new_id(),
        project_id=project_id,
        plan_id=plan_id or f"fake_{new_id()}",
        plan_name=f"server protect plan for {server_id}",
        status=status,
        created_at=created_at,
        created_by="manual",
        resources=((server_id, server_name),),
    )
    backup_id = new_id()
    done = created_at + dt.timedelta(minutes=2)
    backup = Backup(
        id=backup_id,
        checkpoint_id=cp.id,
        project_id=project_id,
        name=name,
        description="",
        resource_id=server_id,
        resource_name=server_name,
        resource_type="OS::Nova::Server",
        status=status,
        created_at=created_at,
        updated_at=done,
        protected_at=created_at + dt.timedelta(seconds=1),
        finished_at=done,
        plan_id=plan_id,
        auto_trigger=False,
        incremental=False,
        progress=100,
        consistency="crash_consistent",
        fail_op="",
        fail_reason="",
        fail_code="",
        task_id=new_id(),
        extra={"user_extra_info": {}, "repository_backup_id": f"{backup_id}.1"},
        tags=tuple(Tag(k, v) for k, v in tags),
        disks=tuple(
            DiskBackup(
                id=new_id(),
                backup_id=backup_id,
                disk_id=new_id(),
                disk_name=f"{name}_{server_name}-disk{i}",
                device_name=f"/dev/vd{'ab'[i]}",
                bootable=i == 0,
                source_size=8 << 20,
                status=BackupStatus.AVAILABLE,
                logical_bytes=8 << 20,
                stored_bytes=1 << 20,
                new_bytes=1 << 20,
                reused_bytes=0,
                incremental=False,
                seconds=0.5,
            )
            for i in range(2)
        ),
    )
    with services.db.write() as s:
        q.add_checkpoint(s, cp)
        q.add_backup(s, backup)
    return backup


def seed_policy(
    services: Any,
    project_id: str,
    name: str,
    *,
    tags: Sequence[tuple[str, str]] = (),
    created_at: dt.datetime = EPOCH,
) -> str:
    """A disabled daily policy row with its tags, as policy creation (P1) stores one."""
    from csbs.db import tables

    policy_id = new_id()
    with services.db.write() as s:
        s.add(
            tables.Policy(
                id=policy_id,
                project_id=project_id,
                name=name,
                description="",
                provider_id="fc4d5750-22e7-4798-8a46-f48f62c4c1da",
                parameters={"common": {}},
                status="suspended",
                operation_id=new_id(),
                operation_name="daily",
                operation_description="",
                enabled=False,
                trigger_id=new_id(),
                pattern="BEGIN:VCALENDAR\nBEGIN:VEVENT\nRRULE:FREQ=DAILY;BYHOUR=3\n"
                "END:VEVENT\nEND:VCALENDAR",
                timezone=None,
                definition={"max_backups": 10},
                created_at=created_at,
                updated_at=created_at,
                next_run_at=None,
            )
        )
        s.flush()
        for k, v in tags:
            s.add(tables.PolicyTag(policy_id=policy_id, key=k, value=v))
    return policy_id
