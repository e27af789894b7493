"""The one backup provider CSBS has."""

from __future__ import annotations

import dataclasses

from csbs.domain.errors import ProviderInvalid

#: The constant provider id every CSBS client sends.
CSBS_PROVIDER_ID = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


@dataclasses.dataclass(frozen=True)
class Provider:
    id: str
    name: str
    description: str


CSBS_PROVIDER = Provider(
    id=CSBS_PROVIDER_ID,
    name="CSBS",
    description="Cloud Server Backup Service: block-level backups of servers and their disks.",
)


def require_provider(provider_id: str) -> Provider:
    """The provider named by `provider_id`.

    Raises:
        ProviderInvalid: for any id but the CSBS constant.
    """
    if provider_id != CSBS_PROVIDER_ID:
        raise ProviderInvalid()
    return CSBS_PROVIDER
