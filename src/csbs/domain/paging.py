"""Paging and sorting requests of list calls (`limit`, `marker`, `offset`, `sort`)."""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

from csbs.domain import errors

DEFAULT_LIMIT = 1000
MAX_SORT_LENGTH = 255
#: limit and offset above this are refused (the databases' integer range).
MAX_INT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class SortKey:
    key: str
    descending: bool


@dataclasses.dataclass(frozen=True)
class PageRequest:
    """One page of a list: at most `limit` items after `marker`, skipping `offset`."""

    limit: int = DEFAULT_LIMIT
    marker: str | None = None
    offset: int = 0
    sort: tuple[SortKey, ...] = ()


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    #: Whether another page exists after this one (links are emitted only then).
    has_more: bool


def parse_sort(text: str | None, allowed: frozenset[str], default: str) -> tuple[SortKey, ...]:
    """Parse `key1[:asc|desc],key2[:asc|desc]`; direction defaults to descending.

    Raises:
        InvalidInput: text over 255 characters, an unknown key or direction, or a key twice.
    """
    if text is None or text.strip() == "":
        text = default
    if len(text) > MAX_SORT_LENGTH:
        raise errors.InvalidInput(f"sort must be at most {MAX_SORT_LENGTH} characters")
    keys: list[SortKey] = []
    for part in text.split(","):
        name, _, direction = part.strip().partition(":")
        name = name.strip()
        direction = direction.strip().lower() or "desc"
        if name not in allowed:
            raise errors.InvalidInput(
                f"sort key {name!r} is not one of: {', '.join(sorted(allowed))}"
            )
        if direction not in ("asc", "desc"):
            raise errors.InvalidInput(f"sort direction {direction!r} must be asc or desc")
        if any(k.key == name for k in keys):
            raise errors.InvalidInput(f"sort key {name!r} is given twice")
        keys.append(SortKey(name, direction == "desc"))
    return tuple(keys)


def page_request(
    *,
    limit: int | None,
    marker: str | None,
    offset: int | None,
    sort: str | None,
    allowed_sort: frozenset[str],
    default_sort: str,
) -> PageRequest:
    """Validate the paging query parameters of a list call.

    Raises:
        InvalidInput: a non-positive limit, a negative offset, or a bad sort.
    """
    if limit is not None and not 1 <= limit <= MAX_INT:
        raise errors.InvalidInput(f"limit must be an integer from 1 to {MAX_INT}")
    if offset is not None and not 0 <= offset <= MAX_INT:
        raise errors.InvalidInput(f"offset must be an integer from 0 to {MAX_INT}")
    return PageRequest(
        limit=limit or DEFAULT_LIMIT,
        marker=marker or None,
        offset=offset or 0,
        sort=parse_sort(sort, allowed_sort, default_sort),
    )
