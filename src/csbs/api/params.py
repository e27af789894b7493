"""Query-string values of the CSBS API parsed into domain values (the API's job, not the
use cases')."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from fastapi import Depends, Request

from csbs.domain import errors
from csbs.domain.paging import PageRequest, page_request

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


def parse_date_bound(value: str | None, field: str, *, end: bool) -> dt.datetime | None:
    """Karbor's `start_date`/`end_date` (`2017-04-18`, or a CSBS timestamp). A bare date
    as the end takes in that whole day, as Karbor's own filter does."""
    moment = parse_time(value, field)
    if moment is not None and end and value is not None and len(value.strip()) == 10:
        return moment + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return moment


def karbor_sort(sort: str | None, sort_key: str | None, sort_dir: str | None) -> str | None:
    """One `sort` text from Karbor's `sort`, or its older `sort_key` and `sort_dir`.

    Raises:
        InvalidInput: both forms given, or a direction without a key.
    """
    if sort_key is None and sort_dir is None:
        return sort
    if sort is not None:
        raise errors.InvalidInput("sort cannot be combined with sort_key or sort_dir")
    if sort_key is None:
        raise errors.InvalidInput("sort_dir needs a sort_key")
    return f"{sort_key}:{sort_dir}" if sort_dir else sort_key


def karbor_page(
    *,
    limit: int | None,
    marker: str | None,
    offset: int | None,
    sort: str | None,
    sort_key: str | None,
    sort_dir: str | None,
    allowed_sort: frozenset[str],
    default_sort: str,
) -> PageRequest:
    """The page a Karbor list asks for: its paging parameters, sorted by `sort` or by the
    older `sort_key` and `sort_dir` (`karbor_sort`)."""
    return page_request(
        limit=limit,
        marker=marker,
        offset=offset,
        sort=karbor_sort(sort, sort_key, sort_dir),
        allowed_sort=allowed_sort,
        default_sort=default_sort,
    )


def project_scope(
    path_project: str, every_project: bool, tenant: str | None
) -> tuple[str | None, bool]:
    """The project a Karbor list takes, from its path, `all_tenants` and the `project_id`
    filter Karbor clients send beside them: (project or None for every one, whether nothing
    can match because the filter names another project than the path's)."""
    if every_project:
        return tenant or None, False
    return path_project, tenant is not None and tenant != path_project


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def refuse_unknown_query(request: Request) -> None:
    """A list route's guard: a query parameter it does not declare is refused, because a
    filter that is silently ignored answers with data the caller did not ask for (spec
    §11.18). CSBS's own lists stay lenient: its SDKs send parameters that mean nothing."""
    route = request.scope.get("route")
    if route is None:
        return
    unknown = sorted(set(request.query_params) - _query_names(route.dependant))
    if unknown:
        raise errors.InvalidInput(
            f"query parameter {unknown[0]!r} is not supported by {request.url.path}"
        )


StrictQuery = Depends(refuse_unknown_query)
