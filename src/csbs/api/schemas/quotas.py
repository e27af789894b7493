"""Wire shapes of quotas: Q1 (spec §4.15, §6.6) and the admin change (our extension)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt

from csbs.api.schemas.common import timestamp
from csbs.domain.quotas import BACKUP_CAPACITY, BACKUPS, QuotaUsage


class QuotaLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: retained backups; -1 = unlimited
    backups: StrictInt | None = None
    #: GB stored after deduplication and compression; -1 = unlimited
    backup_capacity: StrictInt | None = None


class QuotaUpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quotas: QuotaLimits


def quotas_body(usage: QuotaUsage) -> dict[str, Any]:
    return {
        "quotas": {
            "resources": [
                {
                    "type": BACKUP_CAPACITY,
                    "unit": "GB",
                    "quota": usage.quotas.capacity_gb,
                    "used": usage.capacity_gb,
                    # csbs's additions: exact bytes, and what deletions left to release.
                    "stored_bytes": usage.stored_bytes,
                    "pending_release_bytes": usage.pending_release_bytes,
                    "release_by": timestamp(usage.release_by),
                },
                {"type": BACKUPS, "quota": usage.quotas.backups, "used": usage.backups},
            ]
        }
    }
