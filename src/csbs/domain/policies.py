"""Backup policies: which servers, when (a schedule), and how long backups stay (retention)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from csbs.domain import errors, schedules
from csbs.domain.backups import Tag
from csbs.domain.inventory import SERVER_TYPE
from csbs.domain.retention import UNLIMITED, RetentionRules

MAX_POLICIES_PER_PROJECT = 32
MAX_SERVERS_PER_POLICY = 64
MAX_RETENTION = 99999
MAX_LONG_TERM = 100
#: The status a policy reports (spec §11.9): `suspended` from creation on; an update that
#: sets `enabled` reports `enabled` or `disabled` from then on.
STATUS_SUSPENDED = "suspended"
_COUNT_KEYS = ("max_backups", "retention_duration_days")
_LONG_TERM_KEYS = ("day_backups", "week_backups", "month_backups", "year_backups")


@dataclasses.dataclass(frozen=True)
class PolicyResource:
    """A server associated with a policy."""

    id: str
    name: str
    type: str = SERVER_TYPE
    extra_info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ScheduledOperation:
    """The policy's one scheduled backup: its trigger and its retention."""

    id: str
    name: str
    description: str
    enabled: bool
    trigger_id: str
    pattern: str
    #: the zone the pattern's times are read in (our extension; UTC when unset)
    timezone: str | None
    #: operation_definition as given (normalised types), without plan_id/provider_id
    definition: Mapping[str, Any]

    @property
    def schedule(self) -> schedules.Schedule:
        return schedules.parse(self.pattern)

    @property
    def retention(self) -> RetentionRules:
        return retention_rules(self.definition)


@dataclasses.dataclass(frozen=True)
class Policy:
    id: str
    project_id: str
    name: str
    description: str
    provider_id: str
    parameters: Mapping[str, Any]
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    resources: tuple[PolicyResource, ...]
    operation: ScheduledOperation
    tags: tuple[Tag, ...]
    next_run_at: dt.datetime | None

    def next_run(self, after: dt.datetime) -> dt.datetime | None:
        """When the schedule fires next after `after`, or None when it is disabled."""
        if not self.operation.enabled:
            return None
        zone = schedules.zone(self.operation.timezone)
        anchor = self.created_at.astimezone(zone).replace(tzinfo=None)
        return schedules.next_run(self.operation.schedule, zone, after, anchor)


@dataclasses.dataclass(frozen=True)
class PolicyRun:
    """One firing of a policy: the backup record it made and the servers it skipped."""

    id: str
    policy_id: str
    project_id: str
    slot_at: dt.datetime
    fired_at: dt.datetime
    trigger: str  # "schedule" or "manual"
    checkpoint_id: str | None
    skipped: tuple[Mapping[str, str], ...]


def _int(key: str, value: Any, low: int, high: int, allow_unlimited: bool) -> int:
    # Clients send numbers, or numbers as strings (the old Go SDK); bools are not numbers.
    if isinstance(value, bool):
        raise errors.InvalidInput(f"operation_definition.{key} must be a number")
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,9}\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise errors.InvalidInput(f"operation_definition.{key} must be a number")
    if (allow_unlimited and value == UNLIMITED) or low <= value <= high:
        return value
    unlimited = "-1 or " if allow_unlimited else ""
    raise errors.InvalidInput(f"operation_definition.{key} must be {unlimited}{low}-{high}")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise errors.InvalidInput(f"operation_definition.{key} must be true or false")


def check_definition(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Normalise an `operation_definition`: numbers as int, `permanent` as bool.

    `plan_id` and `provider_id` are dropped (the service fills them); unknown keys are
    ignored, as real clients send extras.

    Raises:
        InvalidInput: a value out of range, or long-term counts without a timezone.
    """
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if value is None:
            continue
        if key in _COUNT_KEYS:
            out[key] = _int(key, value, 0, MAX_RETENTION, True)
        elif key in _LONG_TERM_KEYS:
            out[key] = _int(key, value, 0, MAX_LONG_TERM, False)
        elif key == "permanent":
            out[key] = _bool(key, value)
        elif key == "timezone":
            if not isinstance(value, str):
                raise errors.InvalidInput("operation_definition.timezone must be a string")
            schedules.zone(value)
            out[key] = value
    if any(out.get(k) for k in _LONG_TERM_KEYS) and "timezone" not in out:
        raise errors.InvalidInput(
            "operation_definition.timezone is required with day/week/month/year_backups"
        )
    return out


def retention_rules(definition: Mapping[str, Any]) -> RetentionRules:
    return RetentionRules(
        max_backups=int(definition.get("max_backups", UNLIMITED)),
        retention_duration_days=int(definition.get("retention_duration_days", UNLIMITED)),
        permanent=bool(definition.get("permanent", False)),
        day_backups=int(definition.get("day_backups", 0)),
        week_backups=int(definition.get("week_backups", 0)),
        month_backups=int(definition.get("month_backups", 0)),
        year_backups=int(definition.get("year_backups", 0)),
        tz=schedules.zone(definition.get("timezone")),
    )


class PolicyLimitReached(errors.InvalidInput):
    code = "CSBS.0001"

    def __init__(self) -> None:
        super().__init__(
            f"Service over limit: a project has at most {MAX_POLICIES_PER_PROJECT} policies"
        )


class DuplicatePolicyName(errors.InvalidInput):
    code = "CSBS.9007"

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate service name: a policy named {name!r} exists")


class ServerInPolicy(errors.InvalidInput):
    code = "CSBS.6004"

    def __init__(self, server_id: str) -> None:
        super().__init__(f"Server ({server_id}) is already in service.")


class PolicyExecuting(errors.InvalidState):
    code = "CSBS.2004"

    def __init__(self, policy_id: str) -> None:
        super().__init__(f"item in plan executing: policy ({policy_id}) is backing up")


class NothingToBackUp(errors.InvalidState):
    code = "CSBS.6032"

    def __init__(self, policy_id: str) -> None:
        super().__init__(f"plan has no resource backup: policy ({policy_id}) has no server")


@dataclasses.dataclass(frozen=True)
class PolicyFilter:
    """Which policies a list takes; None means "any"."""

    project_id: str | None = None
    name: str | None = None
    description: str | None = None
    #: whether its schedule fires (Karbor's plan status: started or suspended)
    enabled: bool | None = None


#: The policy option (in `parameters.common`) that makes its backups read every disk.
FULL_READ = "full_read"


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A policy's `parameters`, as stored: free form, but `common.full_read` (csbs's
    option: its backups read every disk, unchanged image files too) must be a boolean
    or the text "true" or "false"."""
    common = parameters.get("common")
    if isinstance(common, Mapping) and FULL_READ in common:
        value = common[FULL_READ]
        if not (isinstance(value, bool) or str(value).lower() in ("true", "false")):
            raise errors.InvalidInput(
                f"parameters.common.{FULL_READ} must be true or false", code="CSBS.9001"
            )
    return dict(parameters)


def full_read(parameters: Mapping[str, Any]) -> bool:
    """Whether the policy's backups read every disk (`parameters.common.full_read`)."""
    common = parameters.get("common")
    if not isinstance(common, Mapping):
        return False
    value = common.get(FULL_READ, False)
    return value is True or str(value).lower() == "true"
