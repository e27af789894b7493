"""Karbor's wire shapes of protection plans (spec §11.17): a view of CSBS policies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from csbs.api.schemas.policies import ResourceIn
from csbs.domain.policies import Policy

#: A plan is started while its policy's schedule fires, suspended otherwise.
PLAN_STATUSES = ("started", "suspended")
#: What a plan made through Karbor's API schedules: nothing until it is started, then a
#: weekly backup that keeps every copy; CSBS clients may change both as for any policy.
DEFAULT_PATTERN = (
    "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=SU;BYHOUR=0;BYMINUTE=0\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
DEFAULT_DEFINITION: dict[str, Any] = {"permanent": True}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PlanCreateIn(_Lenient):
    name: str
    description: str | None = None
    provider_id: str = Field(max_length=64)
    parameters: dict[str, Any] | None = None
    resources: list[ResourceIn] = Field(max_length=1000)


class PlanCreateBody(_Lenient):
    plan: PlanCreateIn


class PlanUpdateIn(_Lenient):
    name: str | None = None
    description: str | None = None
    resources: list[ResourceIn] | None = Field(default=None, max_length=1000)
    status: Literal["started", "suspended"] | None = None


class PlanUpdateBody(_Lenient):
    plan: PlanUpdateIn


def plan_status(policy: Policy) -> str:
    return "started" if policy.operation.enabled else "suspended"


def plan_body(policy: Policy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "status": plan_status(policy),
        "provider_id": policy.provider_id,
        "project_id": policy.project_id,
        "resources": [
            {"id": r.id, "type": r.type, "name": r.name, "extra_info": dict(r.extra_info)}
            for r in policy.resources
        ],
        "parameters": dict(policy.parameters),
    }
