"""ORM tables of the metadata database. These classes never leave the `db` package."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.sql.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(orm.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255), unique=True)
    domain_id: orm.Mapped[str] = orm.mapped_column(sa.String(64), default="default")
    description: orm.Mapped[str] = orm.mapped_column(sa.String(255), default="")
    enabled: orm.Mapped[bool] = orm.mapped_column(sa.Boolean, default=True)
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)


class User(Base):
    __tablename__ = "users"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255), unique=True)
    password_hash: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    enabled: orm.Mapped[bool] = orm.mapped_column(sa.Boolean, default=True)
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"

    user_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    role: orm.Mapped[str] = orm.mapped_column(sa.String(32))


class Token(Base):
    __tablename__ = "tokens"

    #: SHA-256 of the token; the token itself is never stored.
    token_hash: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    user_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    project_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE")
    )
    issued_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    expires_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime, index=True)
    revoked_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UTCDateTime, nullable=True)


class Server(Base):
    __tablename__ = "servers"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    # NULL: a discovered libvirt domain that no project has yet
    project_id: orm.Mapped[str | None] = orm.mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True, nullable=True
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    host: orm.Mapped[str | None] = orm.mapped_column(sa.String(255), nullable=True)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    allow_hardlinks: orm.Mapped[bool] = orm.mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    #: manual (registered with disk paths) or libvirt (discovered; id = domain UUID)
    source: orm.Mapped[str] = orm.mapped_column(
        sa.String(16), default="manual", server_default="manual"
    )
    #: the owner project a Nova-defined domain's metadata names
    nova_project: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), nullable=True)


class Disk(Base):
    __tablename__ = "disks"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    server_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("servers.id", ondelete="CASCADE"), index=True
    )
    position: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    device_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    # A path may back only one disk: two servers sharing a disk would restore over each other.
    path: orm.Mapped[str] = orm.mapped_column(sa.String(4096), unique=True)
    size_bytes: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    bootable: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    identity: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), nullable=True)
    # libvirt disks: the target device, format, disk type, source, and why csbs cannot read
    # it (NULL when it can). Their `path` is `libvirt:<domain uuid>/<target>`.
    target: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), nullable=True)
    format: orm.Mapped[str | None] = orm.mapped_column(sa.String(16), nullable=True)
    kind: orm.Mapped[str | None] = orm.mapped_column(sa.String(16), nullable=True)
    source: orm.Mapped[str | None] = orm.mapped_column(sa.String(4096), nullable=True)
    unsupported: orm.Mapped[str | None] = orm.mapped_column(sa.String(1024), nullable=True)


class Checkpoint(Base):
    """A backup record (CSBS checkpoint): one run, one backup per server."""

    __tablename__ = "checkpoints"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(64), index=True)
    plan_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    plan_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    created_by: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)


class Backup(Base):
    """One server's backup (CSBS checkpoint item)."""

    __tablename__ = "backups"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    checkpoint_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True
    )
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    description: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    resource_id: orm.Mapped[str] = orm.mapped_column(sa.String(64), index=True)
    resource_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    resource_type: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    status: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    protected_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UTCDateTime, nullable=True)
    finished_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UTCDateTime, nullable=True)
    plan_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), nullable=True)
    auto_trigger: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    incremental: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    progress: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    consistency: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    fail_op: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    fail_reason: orm.Mapped[str] = orm.mapped_column(sa.Text)
    fail_code: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    task_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    extra: orm.Mapped[dict[str, object]] = orm.mapped_column(sa.JSON)

    __table_args__ = (
        sa.Index("ix_backups_project_created", "project_id", "created_at"),
        # A policy's backups: retention after each of its backup tasks, B1's busy check,
        # and lists filtered by plan_id.
        sa.Index("ix_backups_plan_status", "plan_id", "status"),
    )


class DiskBackup(Base):
    """The backup of one disk within a server's backup (CSBS volume backup)."""

    __tablename__ = "disk_backups"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    backup_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("backups.id", ondelete="CASCADE"), index=True
    )
    position: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    disk_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    disk_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    device_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    bootable: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    source_size: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    logical_bytes: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    stored_bytes: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    new_bytes: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    reused_bytes: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    incremental: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    seconds: orm.Mapped[float] = orm.mapped_column(sa.Float)


class BackupTag(Base):
    __tablename__ = "backup_tags"

    backup_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("backups.id", ondelete="CASCADE"), primary_key=True
    )
    key: orm.Mapped[str] = orm.mapped_column(sa.String(127), primary_key=True)
    value: orm.Mapped[str] = orm.mapped_column(sa.String(255))


class ProjectQuota(Base):
    """A project's quotas; a NULL limit (or no row) means the configured default."""

    __tablename__ = "project_quotas"

    project_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    #: retained backups; -1 = unlimited
    backups: orm.Mapped[int | None] = orm.mapped_column(sa.Integer, nullable=True)
    #: stored data in GB (after dedup and compression); -1 = unlimited
    capacity_gb: orm.Mapped[int | None] = orm.mapped_column(sa.Integer, nullable=True)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)


class Restore(Base):
    __tablename__ = "restores"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(64), index=True)
    provider_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    checkpoint_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    backup_id: orm.Mapped[str] = orm.mapped_column(sa.String(36), index=True)
    server_id: orm.Mapped[str] = orm.mapped_column(sa.String(36), index=True)
    power_on: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    restore_target: orm.Mapped[str | None] = orm.mapped_column(sa.String(255), nullable=True)
    mappings: orm.Mapped[list[dict[str, str]]] = orm.mapped_column(sa.JSON)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    reason: orm.Mapped[str] = orm.mapped_column(sa.Text)
    task_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    ended_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(UTCDateTime, nullable=True)


class Policy(Base):
    """A backup policy (CSBS plan) with its one scheduled operation."""

    __tablename__ = "policies"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    project_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE")
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    description: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    provider_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    parameters: orm.Mapped[dict[str, object]] = orm.mapped_column(sa.JSON)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    operation_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    operation_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    operation_description: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    enabled: orm.Mapped[bool] = orm.mapped_column(sa.Boolean)
    trigger_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    pattern: orm.Mapped[str] = orm.mapped_column(sa.Text)
    timezone: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), nullable=True)
    definition: orm.Mapped[dict[str, object]] = orm.mapped_column(sa.JSON)
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    #: when the scheduler fires it next; NULL when disabled
    next_run_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(
        UTCDateTime, nullable=True, index=True
    )

    __table_args__ = (sa.UniqueConstraint("project_id", "name", name="uq_policies_project_name"),)


class PolicyResource(Base):
    """A server associated with a policy; a server belongs to at most one policy."""

    __tablename__ = "policy_resources"

    policy_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True
    )
    server_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True, unique=True
    )
    position: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    extra_info: orm.Mapped[dict[str, object]] = orm.mapped_column(sa.JSON)


class PolicyTag(Base):
    __tablename__ = "policy_tags"

    policy_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True
    )
    key: orm.Mapped[str] = orm.mapped_column(sa.String(127), primary_key=True)
    value: orm.Mapped[str] = orm.mapped_column(sa.String(255))


class PolicyRun(Base):
    """One firing of a policy (scheduled slot or B1); a slot fires at most once."""

    __tablename__ = "policy_runs"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    policy_id: orm.Mapped[str] = orm.mapped_column(sa.ForeignKey("policies.id", ondelete="CASCADE"))
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    slot_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    fired_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
    trigger: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    checkpoint_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36), nullable=True)
    skipped: orm.Mapped[list[dict[str, str]]] = orm.mapped_column(sa.JSON)

    __table_args__ = (
        sa.UniqueConstraint("policy_id", "slot_at", "trigger", name="uq_policy_runs_slot"),
    )


class SchedulerLease(Base):
    """Leadership of the scheduler: the holder runs it until `expires_at`."""

    __tablename__ = "scheduler_leases"

    name: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    holder: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    expires_at: orm.Mapped[dt.datetime] = orm.mapped_column(UTCDateTime)
