"""Query-string values of the CSBS API parsed into domain values (the API's job, not the
use cases')."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from csbs.domain import errors

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_item_ids(values: Sequence[str]) -> list[str] | None:
    """`checkpoint_items` as one id, a comma-separated list, or the parameter repeated.

    Returns None when the parameter is absent (delete every backup of the record).

    Raises:
        InvalidInput: an empty or malformed id.
    """
    if not values:
        return None
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not _ID_RE.match(part):
                raise errors.InvalidInput(
                    "checkpoint_items must be a comma-separated list of backup ids"
                )
            if part not in ids:
                ids.append(part)
    return ids


def parse_time(value: str | None, field: str) -> dt.datetime | None:
    """Parse a CSBS timestamp (`2017-04-18T01:21:52.701973`, fraction optional; UTC)."""
    if value is None or value == "":
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise errors.InvalidInput(f"{field} must look like 2017-04-18T01:21:52.701973")
