"""Tags of backups and policies (CSBS T1-T12): the rules of spec §4.16 and §5.

The same rules hold for every kind of tagged resource; what differs per kind (its table, its
not-found error, what a query answers about it) is bound elsewhere (`db/queries/tags.py`,
`services/tags.py`, `api/routes/tags.py`).

Create (T2 `create`, T3, and tags given when a backup or policy is made): key 1-36 and value
0-43 characters of `[A-Za-z0-9_-]`, value given, keys unique, at most 10 per request and per
resource. Delete (T2 `delete`, T4) and filter (T1): key 1-127 and value 0-255 characters, any
characters. Leading and trailing spaces are stripped everywhere.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from csbs.domain import errors
from csbs.domain.backups import MAX_TAGS, Tag, check_tags, too_many_tags

MAX_KEY = 127
MAX_VALUE = 255
MAX_VALUES = 10
DEFAULT_QUERY_LIMIT = 1000
#: A filter value starting with this matches every value containing the rest (case-insensitive).
FUZZY_PREFIX = "*"
#: The one key `matches` accepts.
MATCH_RESOURCE_NAME = "resource_name"


class TagKind(enum.StrEnum):
    """What is tagged; the value is the path segment of its tag API."""

    BACKUP = "csbs_backup"
    POLICY = "csbs_backup_policy"


class TagNotFound(errors.NotFound):
    """The backup tag does not exist."""

    code = "CSBS.7001"


def check_create(tags: Sequence[tuple[str, str | None]]) -> tuple[Tag, ...]:
    """Tags to add: non-empty, at most 10, unique keys, values given; create charset rules."""
    if not tags:
        raise errors.InvalidInput("tags must not be empty")
    for key, value in tags:
        if value is None:
            raise errors.InvalidInput(f"tag {key.strip()!r} has no value")
    return check_tags([(k, v or "") for k, v in tags])


def merged_count(existing: Sequence[Tag], adding: Sequence[Tag]) -> int:
    """How many tags a resource holds after `adding` (same key overwrites)."""
    return len({t.key for t in existing} | {t.key for t in adding})


@dataclasses.dataclass(frozen=True)
class TagDeletion:
    """One tag to delete: by key alone, or only when it also has `value`."""

    key: str
    value: str | None = None


def _check_key(key: str, what: str = "tag key") -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise errors.InvalidInput(f"{what} must be 1-{MAX_KEY} characters")
    return key


def _check_value(value: str, what: str = "tag value") -> str:
    value = value.strip()
    if len(value) > MAX_VALUE:
        raise errors.InvalidInput(f"{what} must be at most {MAX_VALUE} characters")
    return value


def check_key(key: str) -> str:
    """A key to delete by (T4): non-empty after trimming, at most 127 characters."""
    return _check_key(key)


def check_delete(tags: Sequence[tuple[str, str | None]]) -> tuple[TagDeletion, ...]:
    """Tags to delete: non-empty, at most 10; duplicates allowed; no charset rules."""
    if not tags:
        raise errors.InvalidInput("tags must not be empty")
    if len(tags) > MAX_TAGS:
        raise too_many_tags()
    return tuple(
        TagDeletion(_check_key(k), None if v is None else _check_value(v)) for k, v in tags
    )


@dataclasses.dataclass(frozen=True)
class KeyValues:
    """A filter term: the resource has tag `key` with one of `values` (any value if empty)."""

    key: str
    values: tuple[str, ...] = ()


def check_filter_tags(
    field: str, items: Sequence[tuple[str, Sequence[str]]] | None
) -> tuple[KeyValues, ...]:
    """One of T1's tag lists: non-empty if given, at most 10 unique keys, at most 10 unique
    values per key; key 1-127, value 0-255 characters."""
    if items is None:
        return ()
    if not items:
        raise errors.InvalidInput(f"{field} must not be empty")
    if len(items) > MAX_TAGS:
        raise too_many_tags()
    out: list[KeyValues] = []
    for key, values in items:
        key = _check_key(key, f"{field}: key")
        if any(t.key == key for t in out):
            raise errors.InvalidInput(f"{field}: key {key!r} is given twice")
        if len(values) > MAX_VALUES:
            raise errors.InvalidInput(f"{field}: key {key!r} has more than {MAX_VALUES} values")
        clean = tuple(_check_value(v, f"{field}: value") for v in values)
        if len(set(clean)) != len(clean):
            raise errors.InvalidInput(f"{field}: key {key!r} has a value twice")
        out.append(KeyValues(key, clean))
    return tuple(out)


def check_matches(items: Sequence[tuple[str, str]] | None) -> str | None:
    """T1's `matches`: only `resource_name`, once; its value (trimmed, at most 255)."""
    if items is None:
        return None
    if not items:
        raise errors.InvalidInput("matches must not be empty")
    name: str | None = None
    for key, value in items:
        if key.strip() != MATCH_RESOURCE_NAME:
            raise errors.InvalidInput(f"matches: key must be {MATCH_RESOURCE_NAME!r}")
        if name is not None:
            raise errors.InvalidInput(f"matches: key {MATCH_RESOURCE_NAME!r} is given twice")
        name = _check_value(value, "matches: value")
    return name


def _number(field: str, raw: str | int | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10 or not low <= int(text) <= high:
        raise errors.InvalidInput(f"{field} must be a number from {low} to {high}")
    return int(text)


class QueryAction(enum.StrEnum):
    FILTER = "filter"
    COUNT = "count"


@dataclasses.dataclass(frozen=True)
class TagQuery:
    """T1: resources with all of `tags`, any of `tags_any`, not all of `not_tags`, none of
    `not_tags_any`, and (if given) a name containing `name` (exactly `""` when empty)."""

    tags: tuple[KeyValues, ...] = ()
    tags_any: tuple[KeyValues, ...] = ()
    not_tags: tuple[KeyValues, ...] = ()
    not_tags_any: tuple[KeyValues, ...] = ()
    name: str | None = None
    limit: int = DEFAULT_QUERY_LIMIT
    offset: int = 0


def parse_action(raw: str) -> QueryAction:
    try:
        return QueryAction(raw)
    except ValueError:
        raise errors.InvalidInput("action must be filter or count") from None


def parse_limit(raw: str | int | None) -> int:
    """`limit` is a string "1".."1000" (default 1000)."""
    return _number("limit", raw, DEFAULT_QUERY_LIMIT, 1, DEFAULT_QUERY_LIMIT)


def parse_offset(raw: str | int | None) -> int:
    """`offset` is a string "0" or more (default 0); results start after that many."""
    return _number("offset", raw, 0, 0, 2**31 - 1)


@dataclasses.dataclass(frozen=True)
class ProjectTag:
    """T6: a key used in the project and its distinct values."""

    key: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TaggedResource:
    """One answer of T1: the resource, its tags and (for backups) the resource itself."""

    id: str
    name: str
    tags: tuple[Tag, ...]
    detail: object | None = None


@dataclasses.dataclass(frozen=True)
class TagQueryResult:
    total: int
    resources: tuple[TaggedResource, ...] = ()
