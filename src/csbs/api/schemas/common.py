"""Shapes shared by list calls: timestamps and `<x>_links` paging links."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from fastapi import Request


def timestamp(value: dt.datetime | None) -> str | None:
    """CSBS timestamps: UTC, no zone suffix, microseconds (`2017-04-18T01:21:52.701973`)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def next_link(request: Request, base: str, last_id: str, limit: int) -> list[dict[str, Any]]:
    """The `next` link of a paged list: same query, marker = last id of this page."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("marker", "offset")]
    query = [(k, v) for k, v in query if k != "limit"] + [
        ("limit", str(limit)),
        ("marker", last_id),
    ]
    href = f"{base}{request.url.path}?{urllib.parse.urlencode(query)}"
    return [{"href": href, "rel": "next"}]
