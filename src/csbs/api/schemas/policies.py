"""CSBS wire shapes of backup policies (spec §4.9-4.13, §6.4) and of B1 (§4.4)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from csbs.api.schemas.backups import TagIn
from csbs.api.schemas.common import timestamp
from csbs.domain.policies import Policy, PolicyRun
from csbs.services.policies import OperationSpec, PolicySpec, ResourceSpec


class _Lenient(BaseModel):
    # Real clients send keys of their own (`trigger_id`, `parameters`, ...): ignored.
    model_config = ConfigDict(extra="ignore")


class ResourceIn(_Lenient):
    id: str = Field(min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=255)
    extra_info: dict[str, Any] | None = None


class TriggerPropertiesIn(_Lenient):
    # Length and content are checked by the schedule parser, which names the problem.
    pattern: str
    #: our extension: the zone the pattern's times are read in (UTC when absent)
    timezone: str | None = Field(default=None, max_length=64)


class TriggerIn(_Lenient):
    properties: TriggerPropertiesIn


class ScheduledOperationIn(_Lenient):
    id: str | None = Field(default=None, max_length=64)
    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    operation_type: str | None = Field(default=None, max_length=64)
    operation_definition: dict[str, Any] | None = None
    trigger: TriggerIn | None = None


class PolicyCreateIn(_Lenient):
    name: str
    description: str | None = None
    provider_id: str = Field(max_length=64)
    parameters: dict[str, Any] | None = None
    resources: list[ResourceIn] = Field(max_length=1000)
    scheduled_operations: list[ScheduledOperationIn] = Field(min_length=1, max_length=1)
    tags: list[TagIn] | None = Field(default=None, min_length=1, max_length=100)


class PolicyCreateBody(_Lenient):
    policy: PolicyCreateIn


class PolicyUpdateIn(_Lenient):
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    resources: list[ResourceIn] | None = Field(default=None, max_length=1000)
    scheduled_operations: list[ScheduledOperationIn] | None = Field(
        default=None, min_length=1, max_length=1
    )


class PolicyUpdateBody(_Lenient):
    policy: PolicyUpdateIn


class SchedulePreviewIn(_Lenient):
    """Our extension: a schedule to try before saving a policy with it."""

    # Length and content are checked by the schedule parser, which names the problem.
    pattern: str
    timezone: str | None = Field(default=None, max_length=64)
    count: int = Field(default=5, ge=1, le=50)
    #: an existing policy, whose schedule counts days from its creation
    policy_id: str | None = Field(default=None, min_length=1, max_length=64)


class SchedulePreviewBody(_Lenient):
    schedule: SchedulePreviewIn


class CheckpointParametersIn(_Lenient):
    auto_trigger: bool | None = None
    resources: list[str] | None = Field(default=None, max_length=1000)


class CheckpointIn(_Lenient):
    plan_id: str = Field(min_length=1, max_length=64)
    parameters: CheckpointParametersIn | None = None
    extra_info: dict[str, Any] | None = Field(default=None, alias="extra-info")
    extra_info_: dict[str, Any] | None = Field(default=None, alias="extra_info")


class CheckpointBody(_Lenient):
    checkpoint: CheckpointIn


def _operation(op: ScheduledOperationIn) -> OperationSpec:
    return OperationSpec(
        id=op.id,
        name=op.name,
        description=op.description,
        enabled=op.enabled,
        operation_type=op.operation_type,
        definition=op.operation_definition,
        pattern=op.trigger.properties.pattern if op.trigger else None,
        timezone=op.trigger.properties.timezone if op.trigger else None,
    )


def _resources(items: list[ResourceIn]) -> list[ResourceSpec]:
    return [ResourceSpec(r.id, r.type, r.name, r.extra_info) for r in items]


def create_spec(p: PolicyCreateIn) -> PolicySpec:
    return PolicySpec(
        name=p.name,
        description=p.description,
        parameters=p.parameters,
        resources=_resources(p.resources),
        operation=_operation(p.scheduled_operations[0]),
        tags=[(t.key, t.value) for t in p.tags] if p.tags is not None else None,
    )


def update_spec(p: PolicyUpdateIn) -> PolicySpec:
    return PolicySpec(
        name=p.name,
        description=p.description,
        parameters=p.parameters,
        resources=_resources(p.resources) if p.resources is not None else None,
        operation=_operation(p.scheduled_operations[0]) if p.scheduled_operations else None,
    )


def _definition(policy: Policy) -> dict[str, Any]:
    """Numbers as strings and `permanent` as a JSON bool: what every client parses (§6.4)."""
    out: dict[str, Any] = {}
    for key, value in policy.operation.definition.items():
        out[key] = value if isinstance(value, bool | str) else str(value)
    out["plan_id"] = policy.id
    out["provider_id"] = policy.provider_id
    return out


def policy_body(policy: Policy) -> dict[str, Any]:
    op = policy.operation
    properties: dict[str, Any] = {
        "pattern": op.pattern,
        "start_time": policy.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "format": "ical",
    }
    if op.timezone:
        properties["timezone"] = op.timezone
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "created_at": timestamp(policy.created_at),
        "project_id": policy.project_id,
        "provider_id": policy.provider_id,
        "parameters": dict(policy.parameters),
        "resources": [
            {"id": r.id, "type": r.type, "name": r.name, "extra_info": dict(r.extra_info)}
            for r in policy.resources
        ],
        "scheduled_operations": [
            {
                "id": op.id,
                "name": op.name,
                "description": op.description,
                "enabled": op.enabled,
                "operation_type": "backup",
                "trigger_id": op.trigger_id,
                "operation_definition": _definition(policy),
                "trigger": {
                    "id": op.trigger_id,
                    "name": "default",
                    "type": "time",
                    "properties": properties,
                },
            }
        ],
        "status": policy.status,
        "tags": [{"key": t.key, "value": t.value} for t in policy.tags],
        # our extension: when the scheduler fires it next (null while disabled)
        "next_run_at": timestamp(policy.next_run_at),
    }


def run_body(run: PolicyRun) -> dict[str, Any]:
    """One firing of a policy (our extension): the record it made, what it skipped and why."""
    return {
        "id": run.id,
        "slot_at": timestamp(run.slot_at),
        "fired_at": timestamp(run.fired_at),
        "trigger": run.trigger,
        "checkpoint_id": run.checkpoint_id,
        "skipped": [
            {"server_id": x.get("server_id", ""), "reason": x.get("reason", "")}
            for x in run.skipped
        ],
    }
