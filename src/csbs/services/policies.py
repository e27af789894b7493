"""Backup policies (CSBS P1-P5, B1): CRUD, running them, and retention after their backups.

A policy's schedule is fired by the scheduler (`services/scheduler.py`) through `fire_due`;
every firing is one row of `policy_runs`, made in the same transaction that moves the
policy's `next_run_at` on (compare-and-set), so a slot fires once even when two schedulers
race. Retention runs in the transaction that ends each of the policy's backup tasks and
drops backups through the deletion tasks (same admission limit as DELETE).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from csbs.db.engine import Database, joined_session
from csbs.db.queries import backups as bq
from csbs.db.queries import identity as identity_q
from csbs.db.queries import inventory as inv
from csbs.db.queries import policies as q
from csbs.domain import errors, schedules
from csbs.domain.backups import (
    Backup,
    BackupStatus,
    Checkpoint,
    check_description,
    check_name,
    check_tags,
)
from csbs.domain.backups import default_name as backup_name
from csbs.domain.clock import Clock
from csbs.domain.ids import new_id
from csbs.domain.inventory import SERVER_TYPE, Server, ServerNotFound, unsupported_type
from csbs.domain.paging import Page, PageRequest
from csbs.domain.policies import (
    MAX_POLICIES_PER_PROJECT,
    MAX_SERVERS_PER_POLICY,
    STATUS_SUSPENDED,
    DuplicatePolicyName,
    NothingToBackUp,
    Policy,
    PolicyExecuting,
    PolicyFilter,
    PolicyLimitReached,
    PolicyResource,
    PolicyRun,
    ScheduledOperation,
    ServerInPolicy,
    check_definition,
    check_parameters,
    full_read,
)
from csbs.domain.providers import CSBS_PROVIDER_ID
from csbs.domain.retention import expired
from csbs.queue import Task, TaskStatus, TaskStore
from csbs.services.backups import BackupService, NewBackups
from csbs.services.deletions import DeletionService

log = logging.getLogger("csbs.policies")
SORT_KEYS = frozenset({"created_at", "updated_at", "name", "id"})
DEFAULT_SORT = "created_at:desc"


@dataclasses.dataclass(frozen=True)
class ResourceSpec:
    id: str
    type: str
    name: str
    extra_info: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class OperationSpec:
    """A scheduled operation as given on create (all set) or update (None = unchanged)."""

    id: str | None = None
    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    operation_type: str | None = None
    definition: Mapping[str, Any] | None = None
    pattern: str | None = None
    timezone: str | None = None


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """P1's body, or P4's with None for what stays unchanged (tags are P1's only; later
    they change through the tag API)."""

    name: str | None = None
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    resources: Sequence[ResourceSpec] | None = None
    operation: OperationSpec | None = None
    tags: Sequence[tuple[str, str]] | None = None


class PolicyService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        tasks: TaskStore,
        backups: BackupService,
        deletions: DeletionService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks
        self._backups = backups
        self._deletions = deletions

    # -- P1-P5 ------------------------------------------------------------------------------

    def create(self, project_id: str, spec: PolicySpec) -> Policy:
        """Raises InvalidInput (9001, 6003, 6004, 7000, 9007, 0001) or ServerNotFound."""
        op = spec.operation
        if spec.name is None or op is None:
            raise errors.InvalidInput("a policy needs a name and one scheduled operation")
        if op.enabled is None:
            raise errors.InvalidInput("scheduled_operations[0].enabled is required")
        if op.operation_type != "backup":
            raise errors.InvalidInput("scheduled_operations[0].operation_type must be backup")
        if op.pattern is None or op.definition is None:
            raise errors.InvalidInput(
                "scheduled_operations[0] needs operation_definition and trigger.properties.pattern"
            )
        now = self._clock.now()
        operation = ScheduledOperation(
            id=new_id(),
            name=check_name(op.name, "scheduled_operations[0].name")
            if op.name is not None
            else "default",
            description=check_description(op.description, "scheduled_operations[0].description"),
            enabled=op.enabled,
            trigger_id=new_id(),
            pattern=self._pattern(op.pattern),
            timezone=self._timezone(op.timezone),
            definition=check_definition(op.definition),
        )
        policy = Policy(
            id=new_id(),
            project_id=project_id,
            name=check_name(spec.name),
            description=check_description(spec.description),
            provider_id=CSBS_PROVIDER_ID,
            parameters=check_parameters(spec.parameters or {"common": {}}),
            status=STATUS_SUSPENDED,
            created_at=now,
            updated_at=now,
            resources=(),
            operation=operation,
            tags=check_tags(spec.tags or ()),
            next_run_at=None,
        )
        policy = dataclasses.replace(policy, next_run_at=policy.next_run(now))
        with self._db.write() as s:
            identity_q.lock_project(s, project_id)
            if q.count_in_project(s, project_id) >= MAX_POLICIES_PER_PROJECT:
                raise PolicyLimitReached()
            if q.name_taken(s, project_id, policy.name, None):
                raise DuplicatePolicyName(policy.name)
            resources = self._resources(s, project_id, policy.id, spec.resources or ())
            policy = dataclasses.replace(policy, resources=resources)
            q.add(s, policy)
        return policy

    def get(self, project_id: str | None, policy_id: str) -> Policy:
        """Raises PolicyNotFound (404 CSBS.3000), also for another project's policy."""
        with self._db.read() as s:
            return _owned(q.get(s, policy_id), project_id, policy_id)

    def search(self, f: PolicyFilter, page: PageRequest) -> Page[Policy]:
        with self._db.read() as s:
            return q.search(s, f, page)

    def update(self, project_id: str | None, policy_id: str, spec: PolicySpec) -> Policy:
        """Apply P4: `resources` replaces the servers; the operation must carry its id."""
        now = self._clock.now()
        with self._db.write() as s:
            current = _owned(q.get(s, policy_id, for_update=True), project_id, policy_id)
            policy = current
            if spec.name is not None or spec.resources is not None:
                # Serialise with every other policy write of the project (the policy row is
                # locked first): names stay unique, and two policies cannot both take the
                # same server.
                identity_q.lock_project(s, policy.project_id)
            if spec.name is not None:
                policy = dataclasses.replace(policy, name=check_name(spec.name))
                if q.name_taken(s, policy.project_id, policy.name, policy.id):
                    raise DuplicatePolicyName(policy.name)
            if spec.description is not None:
                policy = dataclasses.replace(
                    policy, description=check_description(spec.description)
                )
            if spec.parameters is not None:
                policy = dataclasses.replace(policy, parameters=check_parameters(spec.parameters))
            if spec.operation is not None:
                policy = self._update_operation(policy, spec.operation)
            if spec.resources is not None:
                policy = dataclasses.replace(
                    policy,
                    resources=self._resources(s, policy.project_id, policy.id, spec.resources),
                )
            schedule_changed = (
                policy.operation.pattern != current.operation.pattern
                or policy.operation.timezone != current.operation.timezone
                or policy.operation.enabled != current.operation.enabled
            )
            next_run_at = policy.next_run(now) if schedule_changed else current.next_run_at
            policy = dataclasses.replace(policy, updated_at=now, next_run_at=next_run_at)
            q.replace(s, policy)
        return policy

    def _update_operation(self, policy: Policy, op: OperationSpec) -> Policy:
        current = policy.operation
        if op.id is None:
            raise errors.InvalidInput("scheduled_operations[0].id is required on update")
        if op.id != current.id:
            raise errors.InvalidInput(
                f"scheduled_operations[0].id {op.id!r} is not this policy's scheduled operation"
            )
        if op.operation_type is not None and op.operation_type != "backup":
            raise errors.InvalidInput("scheduled_operations[0].operation_type must be backup")
        definition = current.definition
        if op.definition is not None:
            definition = check_definition(op.definition)
        operation = dataclasses.replace(
            current,
            name=check_name(op.name, "scheduled_operations[0].name")
            if op.name is not None
            else current.name,
            description=check_description(op.description, "scheduled_operations[0].description")
            if op.description is not None
            else current.description,
            enabled=op.enabled if op.enabled is not None else current.enabled,
            pattern=self._pattern(op.pattern) if op.pattern is not None else current.pattern,
            timezone=self._timezone(op.timezone) if op.timezone is not None else current.timezone,
            definition=definition,
        )
        status = policy.status
        if op.enabled is not None:
            status = "enabled" if op.enabled else "disabled"
        return dataclasses.replace(policy, operation=operation, status=status)

    @staticmethod
    def _pattern(pattern: str) -> str:
        schedules.parse(pattern)
        return pattern

    @staticmethod
    def _timezone(name: str | None) -> str | None:
        if name is None or name.strip() == "":
            return None
        schedules.zone(name)
        return name.strip()

    def _resources(
        self, s: orm.Session, project_id: str, policy_id: str, given: Sequence[ResourceSpec]
    ) -> tuple[PolicyResource, ...]:
        if len(given) > MAX_SERVERS_PER_POLICY:
            raise errors.InvalidInput(
                f"resources: a policy holds at most {MAX_SERVERS_PER_POLICY} servers"
            )
        ids = [r.id for r in given]
        if len(set(ids)) != len(ids):
            raise errors.InvalidInput("resources: a server is listed twice")
        for r in given:
            if r.type != SERVER_TYPE:
                raise unsupported_type(r.id, r.type)
            server = inv.get_server(s, r.id)
            if server is None or server.project_id != project_id:
                raise ServerNotFound(r.id)
            BackupService.check_server(server)
        owners = q.policies_of_servers(s, ids)
        for server_id, owner in owners.items():
            if owner != policy_id:
                raise ServerInPolicy(server_id)
        return tuple(
            PolicyResource(id=r.id, name=r.name, extra_info=dict(r.extra_info or {})) for r in given
        )

    def delete(self, project_id: str | None, policy_id: str) -> None:
        """The policy goes; the backups it made stay (and stay out of any retention)."""
        with self._db.write() as s:
            _owned(q.get(s, policy_id, for_update=True), project_id, policy_id)
            q.delete(s, policy_id)

    def preview(
        self,
        project_id: str,
        pattern: str,
        timezone: str | None,
        count: int,
        policy_id: str | None = None,
    ) -> list[dt.datetime]:
        """The next `count` runs of a schedule, before any policy is saved with it.

        Counted from the policy's creation when `policy_id` names one (what an edit would
        run), else from now (what a new policy would run); both as the scheduler counts
        them, so what a person is shown is what will fire.

        Raises InvalidInput (9001) for a pattern or zone a policy would refuse."""
        schedule = schedules.parse(pattern)
        zone = schedules.zone(self._timezone(timezone))
        now = self._clock.now()
        created = self.get(project_id, policy_id).created_at if policy_id else now
        anchor = created.astimezone(zone).replace(tzinfo=None)
        return schedules.next_runs(schedule, zone, now, count, anchor)

    def runs(self, project_id: str | None, policy_id: str, limit: int = 20) -> list[PolicyRun]:
        self.get(project_id, policy_id)
        with self._db.read() as s:
            return q.runs(s, policy_id, limit)

    # -- B1 and the scheduler ---------------------------------------------------------------

    def execute(
        self,
        project_id: str,
        policy_id: str,
        server_ids: Sequence[str] | None = None,
        *,
        auto_trigger: bool = False,
        extra_info: dict[str, Any] | None = None,
    ) -> tuple[Checkpoint, list[Backup]]:
        """Back up the policy's servers now (B1): one backup record, one backup per server.

        Raises:
            PolicyNotFound (3000), PolicyExecuting (2004), NothingToBackUp (6032),
            BackupRunning (1001) when a server is being backed up, InvalidInput when a
            server is not the policy's.
        """
        now = self._clock.now()
        with self._db.write() as s:
            policy = _owned(q.get(s, policy_id, for_update=True), project_id, policy_id)
            if bq.policy_busy(s, policy.id):
                raise PolicyExecuting(policy.id)
            members = [r.id for r in policy.resources]
            wanted = list(dict.fromkeys(server_ids)) if server_ids else members
            strangers = [i for i in wanted if i not in members]
            if strangers:
                raise errors.InvalidInput(
                    f"resources: server {strangers[0]} is not associated with policy {policy.id}"
                )
            if not wanted:
                raise NothingToBackUp(policy.id)
            self._backups.check_quota(s, project_id, len(wanted))
            servers = [self._backups.lock_server(s, project_id, i) for i in wanted]
            checkpoint, made = self._backups.create_backups(
                s, project_id, servers, self._new_backups(policy, auto_trigger, extra_info)
            )
            q.add_run(
                s,
                PolicyRun(
                    id=new_id(),
                    policy_id=policy.id,
                    project_id=project_id,
                    slot_at=now,
                    fired_at=now,
                    trigger="manual",
                    checkpoint_id=checkpoint.id,
                    skipped=(),
                ),
            )
        self._tasks.poke()
        return checkpoint, made

    @staticmethod
    def _new_backups(
        policy: Policy, auto_trigger: bool, extra_info: dict[str, Any] | None = None
    ) -> NewBackups:
        return NewBackups(
            name=backup_name("autobk" if auto_trigger else "manualbk"),
            tags=policy.tags,
            # A policy's option: its backups are full (every disk read).
            incremental=False if full_read(policy.parameters) else None,
            extra_info=extra_info,
            auto_trigger=auto_trigger,
            plan_id=policy.id,
            plan_name=policy.name,
        )

    def fire_due(self, limit: int = 100) -> list[PolicyRun]:
        """Fire every policy whose next run is due; each slot fires once, missed ones once.

        Servers whose previous backup still runs (or that cannot be backed up) are skipped
        for this slot, and the run records why.
        """
        now = self._clock.now()
        with self._db.read() as s:
            due = q.due(s, now, limit)
        fired = []
        for policy_id, due_at in due:
            try:
                run = self._fire(policy_id, due_at)
            except Exception:
                # One policy's failure must not hold up the others; it is tried next tick.
                log.exception("firing a policy failed", extra={"policy_id": policy_id})
                continue
            if run is not None:
                fired.append(run)
        if fired:
            self._tasks.poke()
        return fired

    def _fire(self, policy_id: str, due_at: Any) -> PolicyRun | None:
        now = self._clock.now()
        with self._db.write() as s:
            policy = q.get(s, policy_id, for_update=True)
            if policy is None or policy.next_run_at != due_at:
                return None  # another scheduler fired it, or it changed meanwhile
            # After downtime the next run is computed from now: a missed slot fires once.
            if not q.advance(s, policy.id, due_at, policy.next_run(max(now, due_at))):
                return None
            if q.slot_fired(s, policy.id, due_at):
                return None  # e.g. an update on a node whose clock lags set an old slot again
            servers: list[Server] = []
            skipped: list[dict[str, str]] = []
            try:
                # Before any server is locked (the order R1 locks in: project, then server).
                self._backups.check_quota(s, policy.project_id, len(policy.resources))
                members = policy.resources
            except errors.QuotaExceeded as e:
                skipped = [
                    {"server_id": r.id, "code": e.code, "reason": e.message}
                    for r in policy.resources
                ]
                members = ()
            for r in members:
                try:
                    servers.append(self._backups.lock_server(s, policy.project_id, r.id))
                except errors.CsbsError as e:
                    skipped.append({"server_id": r.id, "code": e.code, "reason": e.message})
            checkpoint = None
            if servers:
                checkpoint, _ = self._backups.create_backups(
                    s, policy.project_id, servers, self._new_backups(policy, True)
                )
            elif not policy.resources:
                skipped.append(
                    {"server_id": "", "code": NothingToBackUp.code, "reason": "no server"}
                )
            run = PolicyRun(
                id=new_id(),
                policy_id=policy.id,
                project_id=policy.project_id,
                slot_at=due_at,
                fired_at=now,
                trigger="schedule",
                checkpoint_id=checkpoint.id if checkpoint else None,
                skipped=tuple(skipped),
            )
            q.add_run(s, run)
        return run

    # -- retention --------------------------------------------------------------------------

    def after_backup(self, conn: sa.Connection, task: Task) -> list[str]:
        """In the transaction that ends a policy's backup task: apply the policy's retention.

        Retention counts per server (each server keeps `max_backups` of its own); only the
        policy's available backups are candidates, never manual ones. Returns the ids of
        the deletion tasks it enqueued.
        """
        if task.status is not TaskStatus.SUCCESS or not task.refs.plan_id:
            return []
        with joined_session(conn) as s:
            policy = q.get(s, task.refs.plan_id, for_update=True)  # one retention at a time
            if policy is None:
                return []
            rules = policy.operation.retention
            if rules.keeps_everything:
                return []
            by_server: dict[str, list[Any]] = {}
            for c, server_id in q.retention_candidates(s, policy.id):
                by_server.setdefault(server_id, []).append(c)
            now = self._clock.now()
            drop = [i for c in by_server.values() for i in expired(c, rules, now)]
            targets = (
                [
                    b
                    for b in bq.refs_for_update(s, ids=drop)
                    if b.status is BackupStatus.AVAILABLE  # a DELETE may have come first
                ]
                if drop
                else []
            )
            task_ids = self._deletions.enqueue(s, targets)
            s.flush()
        return task_ids


def _owned(policy: Policy | None, project_id: str | None, policy_id: str) -> Policy:
    """`policy` if it exists and belongs to `project_id` (None: any project, for the CLI);
    else PolicyNotFound (404 CSBS.3000), which never tells another project's apart."""
    if policy is None or (project_id is not None and policy.project_id != project_id):
        raise errors.PolicyNotFound(f"plan not found: {policy_id}")
    return policy
