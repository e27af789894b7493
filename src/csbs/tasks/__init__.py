"""Task handlers: the long operations (backup, restore, delete), run by queue workers."""

from __future__ import annotations

from collections.abc import Mapping

from csbs.queue import Handler
from csbs.services.container import Services


def handlers(services: Services) -> Mapping[str, Handler]:
    """The handler of every operation type this build of csbs can run."""
    return {}
